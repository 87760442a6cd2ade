"""FunASR Paraformer backend on tiny random Paraformer folders built here (the real ones are user-supplied weights).

The folders have the published layout (config.yaml + model.pt + tokens.json + am.mvn) and load through our backend
offline; their output is gibberish, but drawn only from their own token list, which tells which folder was used.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import yaml

from avatar.core import media
from avatar.asr import Asr
from avatar.core.config import AvatarConfig
from avatar.core.errors import WeightsError
from avatar.asr.funasr import FunAsrBackend, check_weights, find_folders

ZH_TOKENS = list("欢迎大家来体验达摩院推出的语音识别模型今天气很好")
EN_TOKENS = list("abcdefghijklmnopqrstuvwxyz")
CJK = re.compile(r"[\u4e00-\u9fff]")
LATIN = re.compile(r"[A-Za-z]")
FEATURE_DIM = 80 * 7  # 80 mel bins stacked over lfr_m = 7 frames


def tiny_paraformer_config(tokens: list[str]) -> dict:
    """A Paraformer with the real architecture classes, shrunk: SANM encoder/decoder 64 wide, 2 blocks each."""
    return {
        "model": "Paraformer",
        "model_conf": {"ctc_weight": 0.0, "lsm_weight": 0.1, "length_normalized_loss": True,
                       "predictor_weight": 1.0, "predictor_bias": 1, "sampling_ratio": 0.75},
        "encoder": "SANMEncoder",
        "encoder_conf": {"output_size": 64, "attention_heads": 4, "linear_units": 128, "num_blocks": 2,
                         "dropout_rate": 0.1, "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1,
                         "input_layer": "pe", "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True,
                         "kernel_size": 11, "sanm_shfit": 0, "selfattention_layer_type": "sanm"},
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": {"attention_heads": 4, "linear_units": 128, "num_blocks": 2, "dropout_rate": 0.1,
                         "positional_dropout_rate": 0.1, "self_attention_dropout_rate": 0.1,
                         "src_attention_dropout_rate": 0.1, "att_layer_num": 2, "kernel_size": 11, "sanm_shfit": 0},
        "predictor": "CifPredictorV2",
        "predictor_conf": {"idim": 64, "threshold": 1.0, "l_order": 1, "r_order": 1, "tail_threshold": 0.45},
        "frontend": "WavFrontend",
        "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10,
                          "lfr_m": 7, "lfr_n": 6, "dither": 0.0},  # dither noise would flip a random model's argmax
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True},
        "input_size": FEATURE_DIM,
    }


def tiny_seaco_paraformer_config(tokens: list[str]) -> dict:
    """The SeACo variant (the published zh model): bias encoder + SeACo decoder for hotwords, CifPredictorV3."""
    conf = tiny_paraformer_config(tokens)
    conf["model"] = "SeacoParaformer"
    conf["model_conf"].update(inner_dim=64, bias_encoder_type="lstm", NO_BIAS=len(tokens) - 2, seaco_weight=0.01)
    conf["predictor"] = "CifPredictorV3"
    conf["predictor_conf"] = {"idim": 64, "threshold": 1.0, "l_order": 1, "r_order": 1, "tail_threshold": 0.45,
                              "smooth_factor2": 0.25, "noise_threshold2": 0.01, "upsample_times": 3,
                              "use_cif1_cnn": False, "upsample_type": "cnn_blstm"}
    conf["seaco_decoder"] = "ParaformerSANMDecoder"
    conf["seaco_decoder_conf"] = {"attention_heads": 4, "linear_units": 128, "num_blocks": 1, "dropout_rate": 0.1,
                                  "positional_dropout_rate": 0.1, "self_attention_dropout_rate": 0.1,
                                  "src_attention_dropout_rate": 0.1, "kernel_size": 21, "sanm_shfit": 0,
                                  "use_output_layer": False, "wo_input_layer": True}
    return conf


def write_am_mvn(path: Path, dim: int) -> None:
    """Kaldi nnet text format FunASR reads: <AddShift> = -mean, <Rescale> = 1/std per feature."""
    shift, scale = " ".join(["-8.0"] * dim), " ".join(["0.25"] * dim)
    path.write_text(f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {shift} ]\n"
                    f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {scale} ]\n</Nnet>\n")


def build_tiny_paraformer(folder: Path, chars: list[str], seaco: bool = False) -> Path:
    """Random weights (FunASR seeds 0), saved in the hub layout; tokens.json is read back by FunASR itself."""
    import torch
    from funasr import AutoModel

    tokens = ["<blank>", "<s>", "</s>", *chars, "<unk>"]
    conf = (tiny_seaco_paraformer_config if seaco else tiny_paraformer_config)(tokens)
    build_conf = {**conf, "tokenizer_conf": {**conf["tokenizer_conf"], "token_list": tokens}}
    built = AutoModel(**build_conf, disable_update=True, device="cpu", log_level="WARNING")
    folder.mkdir(parents=True)
    torch.save(built.model.state_dict(), folder / "model.pt")
    (folder / "config.yaml").write_text(yaml.safe_dump(conf, allow_unicode=True), encoding="utf-8")
    (folder / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False), encoding="utf-8")
    write_am_mvn(folder / "am.mvn", FEATURE_DIM)
    return folder


def build_tiny_fsmn_vad(folder: Path) -> Path:
    """FSMN VAD (the fsmn-vad layout), shrunk; segments longer than 5 s are cut, so long audio is really split."""
    import torch
    from funasr import AutoModel

    conf = {"model": "FsmnVADStreaming",
            "model_conf": {"sample_rate": 16000, "max_single_segment_time": 5000, "max_end_silence_time": 800},
            "encoder": "FSMN",
            "encoder_conf": {"input_dim": 400, "input_affine_dim": 32, "fsmn_layers": 2, "linear_dim": 32,
                             "proj_dim": 16, "lorder": 5, "rorder": 0, "lstride": 1, "rstride": 0,
                             "output_affine_dim": 32, "output_dim": 248},
            "frontend": "WavFrontendOnline",
            "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10,
                              "dither": 0.0, "lfr_m": 5, "lfr_n": 1}}
    built = AutoModel(**conf, disable_update=True, device="cpu", log_level="WARNING")
    folder.mkdir(parents=True)
    torch.save(built.model.state_dict(), folder / "model.pt")
    (folder / "config.yaml").write_text(yaml.safe_dump(conf), encoding="utf-8")
    write_am_mvn(folder / "am.mvn", 400)
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("weights")
    build_tiny_paraformer(root / "funasr" / "paraformer-zh", ZH_TOKENS, seaco=True)
    build_tiny_paraformer(root / "funasr" / "paraformer-en", EN_TOKENS)
    return root


@pytest.fixture(scope="module")
def asr(weights) -> Asr:
    return Asr.load(AvatarConfig(weights_dir=str(weights), device="cpu"))


def test_folders_found_and_loaded_offline(asr, weights):
    assert asr.backend == "funasr" and asr.fallback_reason is None
    assert set(asr._funasr.languages) == {"zh", "en"}
    assert asr._funasr.folder("zh") == (weights / "funasr" / "paraformer-zh").resolve()


def test_backend_transcribes_a_real_fixture_to_a_string(asr, zh_path):
    text = asr._funasr.transcribe(media.load_audio(zh_path).samples, "zh")
    assert isinstance(text, str) and text and not LATIN.search(text)
    assert set(text) <= set(ZH_TOKENS), "only the zh folder's tokens, no spaces between Chinese characters"


def test_hotwords_reach_the_seaco_model(asr, zh_path):
    samples = media.load_audio(zh_path).samples
    assert asr._funasr._models["zh"].seaco and not asr._funasr._models["en"].seaco
    plain = asr._funasr.transcribe(samples, "zh")
    assert asr._funasr.transcribe(samples, "zh") == plain  # deterministic: a change below is the hotwords' doing
    biased = asr._funasr.transcribe(samples, "zh", hotwords="达摩院 语音")
    assert biased != plain  # the bias decoder changed the (random) model's output
    assert asr._funasr.transcribe(samples, "en", hotwords="达摩院") == asr._funasr.transcribe(samples, "en")


def test_forced_language_routes_to_its_folder(asr, zh_path):
    audio = media.load_audio(zh_path)
    zh, en = asr.transcribe(audio, "zh"), asr.transcribe(audio, "en")
    assert (zh.backend, zh.language, en.backend, en.language) == ("funasr", "zh", "funasr", "en")
    assert CJK.search(zh.text) and not LATIN.search(zh.text)
    assert LATIN.search(en.text) and not CJK.search(en.text)


def test_auto_language_detects_then_routes(asr, zh_path, jfk_path):
    zh = asr.transcribe(media.load_audio(zh_path), "auto")
    en = asr.transcribe(media.load_audio(jfk_path), "auto")
    assert zh.language == "zh" and not LATIN.search(zh.text)
    assert en.language == "en" and not CJK.search(en.text)


def test_language_without_folder_uses_whisper(weights, tmp_path, jfk_path):
    only_zh = tmp_path / "w"
    (only_zh / "funasr").mkdir(parents=True)
    (only_zh / "funasr" / "paraformer-zh").symlink_to(weights / "funasr" / "paraformer-zh")
    asr = Asr.load(AvatarConfig(weights_dir=str(only_zh), device="cpu"))
    assert asr.backend == "funasr" and asr._funasr.languages == ("zh",)
    t = asr.transcribe(media.load_audio(jfk_path), "auto")
    assert t.backend == "whisper" and t.language == "en" and "fellow americans" in t.text.lower()


def test_missing_folders_fall_back_to_whisper_with_reason(tmp_path, caplog):
    cfg = AvatarConfig(weights_dir=str(tmp_path), device="cpu").replace(**{"asr.backend": "funasr"})
    with caplog.at_level(logging.WARNING, logger="avatar.asr"):
        asr = Asr.load(cfg)
    assert asr.backend == "whisper"
    assert "no Paraformer folder found" in asr.fallback_reason and str(tmp_path) in asr.fallback_reason
    assert any("falling back to Whisper" in r.getMessage() and "no Paraformer folder" in r.getMessage()
               for r in caplog.records)
    assert find_folders(cfg) == ({}, asr.fallback_reason)


def test_checkpoint_missing_a_tensor_is_refused(asr, weights, tmp_path):
    import torch

    model = asr._funasr._models["zh"].auto_model.model
    state = torch.load(weights / "funasr" / "paraformer-zh" / "model.pt", weights_only=True)
    dropped = sorted(state)[0]
    del state[dropped]
    torch.save(state, tmp_path / "model.pt")
    with pytest.raises(WeightsError, match=re.escape(dropped)):
        check_weights(model, tmp_path / "model.pt")


def test_folder_with_bad_checkpoint_falls_back(weights, tmp_path):
    import shutil

    import torch

    bad = tmp_path / "w" / "funasr" / "paraformer-zh"
    shutil.copytree(weights / "funasr" / "paraformer-zh", bad)
    state = torch.load(bad / "model.pt", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("decoder.")}
    torch.save(state, bad / "model.pt")
    asr = Asr.load(AvatarConfig(weights_dir=str(tmp_path / "w"), device="cpu").replace(**{"asr.backend": "funasr"}))
    assert asr.backend == "whisper" and "missing keys" in asr.fallback_reason


def test_backend_class_is_reusable(weights):
    folders, reason = find_folders(AvatarConfig(weights_dir=str(weights)))
    assert reason is None
    backend = FunAsrBackend.load(AvatarConfig(weights_dir=str(weights)), {"en": folders["en"]}, "cpu")
    assert backend.languages == ("en",)


def test_long_audio_goes_through_the_vad(weights, tmp_path, zh_path):
    import numpy as np

    from avatar.core.types import Audio

    root = tmp_path / "w"
    (root / "funasr").mkdir(parents=True)
    (root / "funasr" / "paraformer-zh").symlink_to(weights / "funasr" / "paraformer-zh")
    build_tiny_fsmn_vad(root / "funasr" / "fsmn-vad")
    asr = Asr.load(AvatarConfig(weights_dir=str(root), device="cpu"))
    auto_model = asr._funasr._models["zh"].auto_model
    assert auto_model.vad_model is not None and auto_model.punc_model is None  # no ct-punc folder: optional
    clip = media.load_audio(zh_path)
    long = Audio(np.concatenate([clip.samples] * 4), clip.sample_rate)  # 22 s: the VAD cuts it into <= 5 s pieces
    from funasr import AutoModel

    assert type(auto_model.vad_model).__name__ == "FsmnVADStreaming"
    vad_alone = AutoModel(model=str(root / "funasr" / "fsmn-vad"), disable_update=True, device="cpu",
                          log_level="WARNING", disable_pbar=True)
    segments = vad_alone.generate(input=long.samples)[0]["value"]
    assert len(segments) >= 4 and all(end - start <= 5100 for start, end in segments)  # 5 s + a frame or two
    t = asr.transcribe(long, "zh")
    assert t.backend == "funasr" and len(t.text) > 10 and set(t.text) <= set(ZH_TOKENS)
