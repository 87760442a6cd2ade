"""The bilingual CPU upgrade (issue 20): `download chat-small` puts Qwen2.5-0.5B-Instruct in chat.small_dir, and
backend "auto" picks it over SmolLM2, so Chinese gets an answer instead of the English-only notice. Tested with a
tiny random model of the same architecture (Qwen2) in that folder."""
from __future__ import annotations

import shutil

from avatar.chat import ENGLISH_ONLY_NOTICE_ZH, ChatModel, planned_chat
from avatar.core.config import AvatarConfig
from avatar.weights import manifest as mf
from avatar.weights.doctor import doctor_report
from tests.chat.test_transformers import model_dir  # noqa: F401  (a tiny real Qwen2 folder)


def _weights_with_small_model(tmp_path, folder):
    # a random model decoded greedily may pick an end token first: sample, as a real model need not
    cfg = AvatarConfig(weights_dir=str(tmp_path)).replace(**{"chat.max_new_tokens": 8, "chat.temperature": 0.7})
    shutil.copytree(folder, cfg.weights_path(cfg.chat.small_dir))
    return cfg


def test_manifest_entry_fills_the_folder_auto_looks_in(tmp_path):
    cfg = AvatarConfig(weights_dir=str(tmp_path))
    entry = next(e for e in mf.default_manifest().for_stage("chat") if e.name == "chat-small")
    assert entry.need == "optional" and entry.licence == "Apache-2.0"
    assert mf.target(cfg, entry) == cfg.weights_path(cfg.chat.small_dir)
    names = {f.path for f in entry.files}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert all((s.kind, s.ref) == ("hf", "Qwen/Qwen2.5-0.5B-Instruct") for f in entry.files for s in f.sources[:1])


def test_auto_picks_the_small_model_and_it_answers_chinese(tmp_path, model_dir):  # noqa: F811
    cfg = _weights_with_small_model(tmp_path, model_dir)
    assert planned_chat(cfg) == ("transformers", cfg.weights_path(cfg.chat.small_dir))
    chat = ChatModel.load(cfg)
    assert chat.backend == "transformers" and chat.fallback_reason is None and "zh" in chat.languages
    reply = chat.reply(chat.new_conversation(), "你好，你叫什么名字？", language="zh")
    assert reply and reply != ENGLISH_ONLY_NOTICE_ZH
    report = doctor_report(cfg, probe_servers=False)
    assert report["runs"]["chat"]["backend"] == "transformers"
    assert str(cfg.weights_path(cfg.chat.small_dir)) in report["stages"]["chat"]["reason"]


def test_a_model_in_model_dir_still_comes_first(tmp_path, model_dir):  # noqa: F811
    cfg = _weights_with_small_model(tmp_path, model_dir)
    shutil.copytree(model_dir, cfg.weights_path(cfg.chat.model_dir))
    assert planned_chat(cfg)[1] == cfg.weights_path(cfg.chat.model_dir)
    smollm2_only = cfg.replace(**{"chat.backend": "smollm2"})
    assert ChatModel.load(smollm2_only).backend == "smollm2"
