"""whisper-hf backend on a tiny random Whisper folder built here (d_model 64, 2 + 2 layers) in Hugging Face format,
with Whisper's real vocabulary size and the packaged Whisper base's tokenizer.json, so every special token id is the
real one. Its words are noise; what is checked is the decoding: the same tokens as transformers' own generate() and
as a loop without the KV cache, the language rule, the bounds, the errors, and the stage's choice of backend."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from avatar.asr import Asr
from avatar.asr.whisper import packaged_tokenizer
from avatar.asr.whisper_hf import Decoded, WhisperHfBackend, pick_language, split_windows
from avatar.core import media
from avatar.core.cancel import CancelToken
from avatar.core.config import AvatarConfig
from avatar.core.errors import Cancelled, NoSpeech, WeightsError

TINY = {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
        "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128}
# the multilingual Whisper's ids, as in the published configs
REAL_IDS = {"vocab_size": 51865, "num_mel_bins": 80, "bos_token_id": 50257, "eos_token_id": 50257,
            "pad_token_id": 50257, "decoder_start_token_id": 50258, "begin_suppress_tokens": [220, 50257]}
EOT, PROMPT_LEN, STEPS = 50257, 4, 12


def build_tiny_whisper(folder: Path, seed: int = 0, **overrides) -> Path:
    """A random Whisper in Hugging Face format. init_std 0.5: at the usual 0.02 a random model repeats one token,
    and a decoder that lost its cache would go unnoticed."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    config = WhisperConfig(init_std=0.5, **{**TINY, **REAL_IDS, **overrides})
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    shutil.copyfile(whisper_tokenizer(), folder / "tokenizer.json")
    return folder


def whisper_tokenizer() -> Path:
    """The packaged Whisper base's tokenizer.json, or WHISPER_TOKENIZER_JSON (a GPU machine without that package)."""
    given = os.environ.get("WHISPER_TOKENIZER_JSON")
    return Path(given) if given else packaged_tokenizer()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("weights") / "whisper-tiny-hf")


@pytest.fixture(scope="module")
def backend(folder) -> WhisperHfBackend:
    return WhisperHfBackend.load(folder, "cpu", max_new_tokens=STEPS)


@pytest.fixture(scope="module")
def speech(jfk_path) -> np.ndarray:
    return media.load_audio(jfk_path, 16000).samples


def reference_greedy(model, mel, prompt: list[int], steps: int) -> list[int]:
    """Greedy decoding the plain way: the whole sequence through the whole model at every step, no cache; special
    tokens suppressed, and at the first step also " " and <|endoftext|> (the config's begin_suppress_tokens)."""
    import torch

    ids = list(prompt)
    for step in range(steps):
        logits = model(input_features=mel, decoder_input_ids=torch.tensor([ids])).logits[0, -1].clone()
        logits[EOT + 1:] = float("-inf")
        if step == 0:
            logits[[220, EOT]] = float("-inf")
        token = int(logits.argmax())
        if token == EOT:
            break
        ids.append(token)
    return ids[len(prompt):]


def transformers_generate(backend: WhisperHfBackend, mel, prompt: list[int], steps: int, suppress=()) -> list[int]:
    """transformers' generic greedy generate() (GenerationMixin: Whisper's own generate() would pick the language
    among all 99) with the prompt forced and the same suppression."""
    import torch
    from transformers import GenerationMixin

    out = GenerationMixin.generate(
        backend.model, input_features=mel, decoder_input_ids=torch.tensor([prompt]), max_new_tokens=steps,
        do_sample=False, num_beams=1, suppress_tokens=[*range(EOT + 1, 51865), *suppress],
        begin_suppress_tokens=[220, EOT], eos_token_id=EOT, pad_token_id=EOT)
    return [t for t in out[0, len(prompt):].tolist() if t != EOT]


# ---------------------------------------------------------------- decoding
@pytest.mark.parametrize("language", ["en", "zh"])
def test_greedy_decode_is_transformers_generate(backend, speech, language):
    import torch

    with torch.inference_mode():
        ours = backend.decode(backend.encode(speech), language)
        theirs = transformers_generate(backend, backend.log_mel(speech), backend.tokens.prompt(language), STEPS)
    assert list(ours.tokens) == theirs
    assert len(set(ours.tokens)) > 3, "varied tokens, so a decoder that lost its cache would show"
    assert ours.language == language and all(t < EOT for t in ours.tokens)
    assert "<|" not in backend.text(ours.tokens)


def test_greedy_decode_is_the_loop_without_cache(backend, speech):
    import torch

    with torch.inference_mode():
        ours = backend.decode(backend.encode(speech), None)
        mel = backend.log_mel(speech)
        first = backend.model(input_features=mel, decoder_input_ids=torch.tensor([[backend.tokens.sot]])).logits[0, 0]
        language = "zh" if first[backend.tokens.languages["zh"]] > first[backend.tokens.languages["en"]] else "en"
        reference = reference_greedy(backend.model, mel, backend.tokens.prompt(language), STEPS)
    assert (ours.language, list(ours.tokens)) == (language, reference)


def _aim(backend: WhisperHfBackend, token: int, ids: list[int], encoded, scale: float) -> None:
    """Points the (tied) embedding row of `token` along the decoder's last hidden state after `ids`, so its logit
    there is `scale` times that state's norm: far above any random row's."""
    import torch

    with torch.no_grad():
        hidden = backend.model.model.decoder(input_ids=torch.tensor([ids]), encoder_hidden_states=encoded)
        state = hidden.last_hidden_state[0, -1]
        backend.model.model.decoder.embed_tokens.weight[token] = scale * state / state.norm()


def test_language_is_the_allowed_one_with_the_highest_logit(folder, speech):
    import torch

    b = WhisperHfBackend.load(folder, "cpu", max_new_tokens=2)
    de = b.tokenizer.token_to_id("<|de|>")
    zh, en = b.tokens.languages["zh"], b.tokens.languages["en"]
    with torch.inference_mode():
        encoded = b.encode(speech)
    for token, scale in ((de, 30.0), (zh, 20.0), (en, 10.0)):
        _aim(b, token, [b.tokens.sot], encoded, scale)
    with torch.inference_mode():
        logits, _ = b._forward([b.tokens.sot], encoded, None)
    assert int(logits[-1].argmax()) == de  # German is likelier still, but not a language the app takes
    assert pick_language(logits[-1], b.tokens.languages) == "zh"
    assert b.detect_language(speech) == "zh" and b.transcribe(speech, None)[1] == "zh"
    _aim(b, en, [b.tokens.sot], encoded, 25.0)
    assert b.detect_language(speech) == "en" and b.transcribe(speech, None)[1] == "en"
    assert b.transcribe(speech, "zh")[1] == "zh"  # a language given is not detected


def test_decoding_stops_at_endoftext(folder, speech):
    import torch

    b = WhisperHfBackend.load(folder, "cpu", max_new_tokens=STEPS)
    with torch.inference_mode():
        encoded = b.encode(speech)
        first = b.decode(encoded, "en").tokens[0]
    _aim(b, EOT, [*b.tokens.prompt("en"), first], encoded, 50.0)
    with torch.inference_mode():
        decoded = b.decode(encoded, "en")
    # not at the first step (<|endoftext|> is in begin_suppress_tokens), then at once
    assert decoded.tokens == (first,)


def test_max_new_tokens_bounds_the_output(folder, backend, speech):
    import torch

    with torch.inference_mode():
        encoded = backend.encode(speech)
        full = backend.decode(encoded, "en").tokens
        assert len(full) == STEPS  # the random model does not stop by itself in 12 tokens
        assert backend.decode(encoded, "en", max_new_tokens=3).tokens == full[:3]
        assert WhisperHfBackend.load(folder, "cpu", max_new_tokens=5).decode(encoded, "en").tokens == full[:5]
    assert WhisperHfBackend.load(folder, "cpu", max_new_tokens=10_000).max_new_tokens == 448 - PROMPT_LEN


def test_suppress_tokens_of_the_folder_are_never_decoded(folder, backend, speech, tmp_path):
    import torch

    with torch.inference_mode():
        plain = backend.decode(backend.encode(speech), "en").tokens
    common = max(set(plain), key=plain.count)
    other = shutil.copytree(folder, tmp_path / "suppressing")
    generation = json.loads((other / "generation_config.json").read_text())
    (other / "generation_config.json").write_text(json.dumps({**generation, "suppress_tokens": [common]}))
    b = WhisperHfBackend.load(other, "cpu", max_new_tokens=STEPS)
    with torch.inference_mode():
        tokens = b.decode(b.encode(speech), "en").tokens
        theirs = transformers_generate(b, b.log_mel(speech), b.tokens.prompt("en"), STEPS, suppress=[common])
    assert common not in tokens and list(tokens) == theirs


def test_silence_rule_is_faster_whispers():
    assert Decoded((), "en", no_speech_prob=0.9, avg_logprob=-2.0).silent
    assert not Decoded((), "en", no_speech_prob=0.9, avg_logprob=-0.5).silent  # confident text: kept
    assert not Decoded((), "en", no_speech_prob=0.1, avg_logprob=-2.0).silent


def test_chinese_text_is_simplified(backend, speech, monkeypatch):
    traditional = backend.tokenizer.encode("歡迎大家來體驗", add_special_tokens=False).ids
    monkeypatch.setattr(backend, "decode", lambda *a, **k: Decoded(tuple(traditional), "zh", 0.0, -0.1))
    assert backend.transcribe(speech, "zh") == ("欢迎大家来体验", "zh")


def test_cancelled_token_stops_the_decoding(backend, speech):
    token = CancelToken()
    token.cancel("interrupted")
    with pytest.raises(Cancelled, match="interrupted"):
        backend.transcribe(speech, "en", token)
    # cancelled while decoding: it stops between tokens, not at the end of the window
    steps, forward, later = [], backend._forward, CancelToken()

    def counted(ids, encoded, cache):
        steps.append(len(ids))
        if len(steps) == 4:
            later.cancel("interrupted")
        return forward(ids, encoded, cache)

    backend._forward = counted
    try:
        with pytest.raises(Cancelled, match="interrupted"):
            backend.transcribe(speech, "en", later)
    finally:
        del backend._forward
    assert len(steps) == 4 < backend.max_new_tokens


def test_long_audio_is_cut_in_its_pauses():
    rng = np.random.default_rng(0)
    samples = (0.1 * rng.standard_normal(16000 * 70)).astype(np.float32)
    gaps = [(27.0, 27.2), (55.5, 55.7)]
    for start, end in gaps:
        samples[int(start * 16000): int(end * 16000)] = 0.0
    pieces = split_windows(samples)
    assert len(pieces) == 3 and all(len(p) <= 30 * 16000 for p in pieces)
    assert np.array_equal(np.concatenate(pieces), samples)
    cuts = np.cumsum([len(p) for p in pieces[:-1]]) / 16000
    assert all(start < cut < end for cut, (start, end) in zip(cuts, gaps))
    assert len(split_windows(samples[: 30 * 16000])) == 1


def test_each_window_of_long_audio_is_decoded(backend, speech, monkeypatch):
    encoded = []
    inner = backend.encode
    monkeypatch.setattr(backend, "encode", lambda window: encoded.append(len(window)) or inner(window))
    text, language = backend.transcribe(np.concatenate([speech] * 3), "en")
    assert len(encoded) == 2 and sum(encoded) == 3 * len(speech) and language == "en" and text


# ---------------------------------------------------------------- the folder
def test_missing_folder_is_a_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="does not exist") as e:
        WhisperHfBackend.load(tmp_path / "nowhere", "cpu")
    assert str(tmp_path / "nowhere") in str(e.value)


@pytest.mark.parametrize("removed", ["tokenizer.json", "config.json", "model.safetensors"])
def test_incomplete_folder_names_what_is_missing(folder, tmp_path, removed):
    broken = shutil.copytree(folder, tmp_path / "broken")
    (broken / removed).unlink()
    with pytest.raises(WeightsError, match="incomplete") as e:
        WhisperHfBackend.load(broken, "cpu")
    assert str(broken) in str(e.value) and removed in str(e.value)


def test_checkpoint_missing_a_tensor_is_refused(folder, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = shutil.copytree(folder, tmp_path / "broken")
    state = load_file(str(folder / "model.safetensors"))
    dropped = "model.decoder.layers.1.fc2.weight"
    del state[dropped]
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(WeightsError, match=f"missing keys.*{dropped}") as e:
        WhisperHfBackend.load(broken, "cpu")
    assert str(broken / "model.safetensors") in str(e.value)


def test_config_of_another_size_is_refused(folder, tmp_path):
    broken = shutil.copytree(folder, tmp_path / "broken")
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "d_model": 128}))
    with pytest.raises(WeightsError, match="wrong shapes"):
        WhisperHfBackend.load(broken, "cpu")


def test_torch_checkpoint_of_the_bare_model_loads_the_same(folder, backend, speech, tmp_path):
    """pytorch_model.bin (weights-only) of a WhisperModel, whose tensor names lack the "model." prefix."""
    import torch
    from safetensors.torch import load_file

    other = tmp_path / "bin"
    other.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(folder / name, other / name)
    state = load_file(str(folder / "model.safetensors"))
    torch.save({k.removeprefix("model."): v for k, v in state.items()}, other / "pytorch_model.bin")
    b = WhisperHfBackend.load(other, "cpu", max_new_tokens=STEPS)
    with torch.inference_mode():
        assert b.decode(b.encode(speech), "en") == backend.decode(backend.encode(speech), "en")


# ---------------------------------------------------------------- the stage and the doctor
def _config(weights: Path, **asr) -> AvatarConfig:
    return AvatarConfig(weights_dir=str(weights), device="cpu").replace(
        **{"asr.backend": "whisper-hf", **{f"asr.{k}": v for k, v in asr.items()}})


def test_stage_runs_whisper_hf_from_the_config(folder, jfk_path):
    cfg = _config(folder.parent, whisper_hf_dir=folder.name, whisper_hf_max_new_tokens=5)
    asr = Asr.load(cfg)
    assert (asr.backend, asr.device, asr.fallback_reason) == ("whisper-hf", "cpu", None)
    assert isinstance(asr._whisper, WhisperHfBackend) and asr._whisper.max_new_tokens == 5
    t = asr.transcribe(media.load_audio(jfk_path), "en")
    assert (t.backend, t.language) == ("whisper-hf", "en") and t.text
    assert asr.transcribe(media.load_audio(jfk_path), "auto").language in ("zh", "en")


def test_stage_says_no_speech_when_the_model_says_nothing(folder, jfk_path, monkeypatch):
    asr = Asr.load(_config(folder.parent, whisper_hf_dir=str(folder)))  # an absolute folder
    monkeypatch.setattr(asr._whisper, "decode", lambda *a, **k: Decoded((), "en", 0.0, -0.1))
    with pytest.raises(NoSpeech):
        asr.transcribe(media.load_audio(jfk_path), "en")


def test_stage_falls_back_to_the_packaged_whisper_with_the_reason(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="avatar.asr"):
        asr = Asr.load(_config(tmp_path, whisper_hf_dir="whisper-base-hf"))
    assert asr.backend == "whisper" and str(tmp_path / "whisper-base-hf") in asr.fallback_reason
    assert any("whisper-hf not used" in r.getMessage() for r in caplog.records)


def test_auto_does_not_pick_whisper_hf(folder):
    cfg = _config(folder.parent, whisper_hf_dir=folder.name).replace(**{"asr.backend": "auto"})
    assert Asr.load(cfg).backend == "whisper"


def test_doctor_reports_the_backend_the_stage_loads(folder, tmp_path):
    from avatar.weights.doctor import doctor_report

    asr = doctor_report(_config(folder.parent, whisper_hf_dir=folder.name), probe_servers=False)["stages"]["asr"]
    assert asr["backend"] == "whisper-hf" and str(folder) in asr["reason"]
    assert any("whisper-hf on CPU" in w for w in asr["warnings"])
    missing = doctor_report(_config(tmp_path, whisper_hf_dir="gone"), probe_servers=False)
    assert missing["stages"]["asr"]["backend"] == "whisper" and missing["runs"]["asr"]["ok"]
    assert any(str(tmp_path / "gone") in w and "falls back to whisper" in w
               for w in missing["stages"]["asr"]["warnings"])


# ---------------------------------------------------------------- the real Whisper base
@pytest.fixture(scope="module")
def real_asr(tmp_path_factory) -> Asr:
    """The packaged Whisper base (CTranslate2) converted back to Hugging Face format by scripts/whisper_ct2_to_hf.py:
    the real weights, offline."""
    import sys

    from avatar.asr import prepare_whisper_base

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from whisper_ct2_to_hf import convert

    weights = tmp_path_factory.mktemp("real")
    convert(prepare_whisper_base(), weights / "whisper-base-hf")
    return Asr.load(_config(weights, whisper_hf_dir="whisper-base-hf"))


def test_real_whisper_base_transcribes_english_and_chinese(real_asr, jfk_path, zh_path):
    from avatar.core.text import char_error_rate, word_error_rate
    from tests.asr.test_asr import JFK_TEXT, ZH_TEXT

    en = real_asr.transcribe(media.load_audio(jfk_path), "auto")
    zh = real_asr.transcribe(media.load_audio(zh_path), "auto")
    print(f"whisper-hf: {en.text} | {zh.text}")
    assert (en.backend, en.language, zh.language) == ("whisper-hf", "en", "zh")
    assert word_error_rate(JFK_TEXT, en.text) <= 0.10 and char_error_rate(ZH_TEXT, zh.text) <= 0.10
    assert "語" not in zh.text and "體" not in zh.text


def test_real_whisper_base_across_window_seams_and_on_noise(real_asr, jfk_path):
    from avatar.core.text import word_error_rate
    from avatar.core.types import Audio
    from tests.asr.test_asr import JFK_TEXT

    take = media.load_audio(jfk_path, 16000).samples
    long = np.concatenate([take, np.zeros(8000, np.float32)] * 3)  # 34.5 s: two windows
    t = real_asr.transcribe(Audio(long, 16000), "en")
    assert word_error_rate(" ".join([JFK_TEXT] * 3), t.text) <= 0.10, t.text
    noise = (0.05 * np.random.default_rng(0).standard_normal(16000 * 3)).astype(np.float32)
    with pytest.raises(NoSpeech):
        real_asr.transcribe(Audio(noise, 16000))


# ---------------------------------------------------------------- GPU
@pytest.mark.gpu
def test_cuda_float16_decodes_the_tokens_of_cpu_float32(folder, backend):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    t = np.arange(16000 * 3) / 16000  # 3 s of a gliding tone in noise (no audio decoder needed on a GPU machine)
    rng = np.random.default_rng(3)
    speech = (0.3 * np.sin(2 * np.pi * (200 + 100 * t) * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    gpu = WhisperHfBackend.load(folder, "cuda", max_new_tokens=6)
    assert gpu.device.startswith("cuda") and gpu.dtype == torch.float16
    with torch.inference_mode():
        cpu_tokens = backend.decode(backend.encode(speech), "en", max_new_tokens=6)
        gpu_tokens = gpu.decode(gpu.encode(speech), "en")
    assert gpu_tokens.tokens == cpu_tokens.tokens
    assert gpu.detect_language(speech) == backend.detect_language(speech)
    assert gpu.transcribe(speech, "en")[0] == backend.text(cpu_tokens.tokens).strip()
