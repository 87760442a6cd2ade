"""GPT-SoVITS backend against stand-ins of its two entry points.

The real server cannot run here (its weights and text-frontend models are downloads; its pins clash with ours), so:
- HTTP: tests/tts/fixtures_gpt_sovits/api_v2.py serves the documented api_v2 /tts contract on http.server in a thread on
  127.0.0.1 (GET and POST, wav and raw, streaming), and misbehaves on request: down, slow, HTTP 400, cut streams.
- in-process: tests/tts/fixtures_gpt_sovits/GPT_SoVITS/TTS_infer_pack/TTS.py has the same TTS(TTS_Config(path)).run()
  shape. Both produce a tone whose pitch and length follow the text, so the audio we get back can be checked exactly.
"""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from avatar.core.config import AvatarConfig
from avatar.core.errors import BackendError, BackendUnavailable
from avatar.tts.gpt_sovits import GptSovitsHttp, GptSovitsInProcess, PcmStream, load_engine, resolve_voices
from avatar.core.media import save_wav
from avatar.tts.base import GPT_SOVITS_SAMPLE_RATE
from avatar.tts import Tts
from avatar.core.types import Audio

CHECKOUT = Path(__file__).resolve().parent / "fixtures_gpt_sovits"
CONFIG = CHECKOUT / "GPT_SoVITS" / "configs" / "tts_infer.yaml"
sys.path.insert(0, str(CHECKOUT))

from api_v2 import serve_in_thread  # noqa: E402  (the stand-in server)
from GPT_SoVITS.TTS_infer_pack.TTS import tone  # noqa: E402

SENTENCE = "Hello there my friend."


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Two voices' files: weights are opaque to us (the server loads them), the reference clips are real wavs."""
    root = tmp_path_factory.mktemp("gsv")
    for name in ("alice", "bob"):
        (root / f"{name}.ckpt").write_bytes(b"stand-in gpt weights")
        (root / f"{name}.pth").write_bytes(b"stand-in sovits weights")
        t = np.arange(16000 * 3) / 16000
        save_wav(Audio((0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 16000), root / f"{name}.wav")
    return root


def voices_cfg(weights: Path) -> list[dict]:
    return [{"name": n, "gpt_weights": f"{n}.ckpt", "sovits_weights": f"{n}.pth", "ref_audio": f"{n}.wav",
             "ref_text": "参考音频的文字。", "ref_lang": "zh"} for n in ("alice", "bob")]


def make_cfg(weights: Path, **tts) -> AvatarConfig:
    return AvatarConfig(weights_dir=str(weights), output_dir=str(weights / "out"), device="cpu").replace(
        **{"tts.backend": "gpt_sovits", "tts.voices": voices_cfg(weights), **{f"tts.{k}": v for k, v in tts.items()}})


@pytest.fixture(scope="module")
def server():
    srv = serve_in_thread(str(CONFIG))
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def url(server) -> str:
    server.behaviour, server.delay_s = "ok", 0.0
    server.calls.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


def expected(text: str, rate: int = 32000) -> np.ndarray:
    return tone(text, rate).astype(np.float32) / 32768.0


def client(weights: Path, url: str, **kw) -> GptSovitsHttp:
    return GptSovitsHttp(url, resolve_voices(make_cfg(weights)), timeout_s=kw.pop("timeout_s", 10.0), **kw)


def test_voices_mixing_own_and_default_weights_are_refused(tmp_path):
    """'plain' without weights after 'alice' with them would speak with alice's model: refused at load."""
    voices = voices_cfg(tmp_path) + [{"name": "plain", "ref_audio": "plain.wav", "ref_text": "参考。"}]
    cfg = make_cfg(tmp_path).replace(**{"tts.voices": voices})
    with pytest.raises(BackendUnavailable, match="'plain' has no gpt_weights while 'alice' has"):
        resolve_voices(cfg)
    none = [{**v, "gpt_weights": "", "sovits_weights": ""} for v in voices]
    assert set(resolve_voices(cfg.replace(**{"tts.voices": none}))) == {"alice", "bob", "plain"}


# ---------------------------------------------------------------- through the stage
def test_stage_over_http(weights, url, server):
    tts = Tts.load(make_cfg(weights, gpt_sovits_url=url))
    assert tts.backend == "gpt_sovits" and tts.fallback_reason is None
    assert tts.voices() == ["alice", "bob"] and tts.sample_rate == GPT_SOVITS_SAMPLE_RATE
    audio = tts.synthesize(SENTENCE, "en")
    np.testing.assert_allclose(audio.samples, expected(SENTENCE), atol=2e-3)
    posted = [c for c in server.calls if c[1] == "/tts"][-1]
    assert posted[0] == "POST" and posted[2]["text"] == SENTENCE and posted[2]["text_lang"] == "en"
    assert posted[2]["ref_audio_path"] == str((weights / "alice.wav").resolve())
    assert posted[2]["prompt_text"] == "参考音频的文字。" and posted[2]["prompt_lang"] == "zh"


def test_stream_per_sentence_and_voice_switches(weights, url, server):
    tts = Tts.load(make_cfg(weights, gpt_sovits_url=url))
    chunks = list(tts.stream("今天天气很好。Nice to meet you!", voice="bob"))
    assert [s for s, _ in chunks] == ["今天天气很好。", "Nice to meet you!"]
    texts = [(c[2]["text"], c[2]["text_lang"]) for c in server.calls if c[1] == "/tts"]
    assert texts == [("今天天气很好。", "zh"), ("Nice to meet you!", "en")]
    tts.synthesize("One more sentence please.", voice="bob")
    tts.synthesize("And now the other voice.", voice="alice")
    switches = [(c[1], Path(c[2]["weights_path"]).name) for c in server.calls if c[1].startswith("/set_")]
    assert switches == [("/set_gpt_weights", "bob.ckpt"), ("/set_sovits_weights", "bob.pth"),
                        ("/set_gpt_weights", "alice.ckpt"), ("/set_sovits_weights", "alice.pth")]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("media_type,streaming", [("wav", False), ("wav", True), ("raw", False), ("raw", True)])
def test_get_post_wav_raw_streaming(weights, url, server, method, media_type, streaming):
    rate, samples = client(weights, url, method=method, media_type=media_type).synthesize(
        SENTENCE, "en", "alice", streaming=streaming)
    assert rate == 32000
    np.testing.assert_allclose(samples, expected(SENTENCE), atol=2e-3)
    call = [c for c in server.calls if c[1] == "/tts"][-1]
    assert call[0] == method and call[2]["media_type"] == media_type


def test_other_server_rate_is_resampled(weights, url, server, tmp_path, monkeypatch):
    monkeypatch.setattr(server.pipeline.configs, "sampling_rate", 24000)
    tts = Tts.load(make_cfg(weights, gpt_sovits_url=url))
    audio = tts.synthesize(SENTENCE, "en")
    assert audio.sample_rate == 32000
    assert audio.duration_s == pytest.approx(len(tone(SENTENCE, 24000)) / 24000, abs=1e-3)


# ---------------------------------------------------------------- failures
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down(weights):
    down = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(BackendUnavailable, match="not answering"):
        client(weights, down).synthesize(SENTENCE, "en", "alice")
    with pytest.raises(BackendUnavailable, match="not answering"):
        load_engine(make_cfg(weights, gpt_sovits_url=down))


def test_server_down_falls_back_to_builtin_voices(weights, caplog):
    down = f"http://127.0.0.1:{_free_port()}"
    with caplog.at_level("WARNING", logger="avatar.tts"):
        tts = Tts.load(make_cfg(weights, gpt_sovits_url=down))
    assert tts.backend == "builtin" and "not answering" in tts.fallback_reason
    assert any("falling back to the built-in voices" in r.getMessage() for r in caplog.records)


def test_timeout(weights, url, server):
    server.behaviour, server.delay_s = "slow", 1.5
    with pytest.raises(BackendError, match="timeout"):
        client(weights, url, timeout_s=0.3).synthesize(SENTENCE, "en", "alice")


def test_http_400_error_body(weights, url, server):
    server.behaviour = "fail"
    with pytest.raises(BackendError, match=r"HTTP 400.*tts failed: CUDA out of memory"):
        client(weights, url).synthesize(SENTENCE, "en", "alice")


def test_bad_weights_path_is_reported(weights, url):
    c = client(weights, url)
    c.voices["alice"] = c.voices["alice"].__class__(**{**c.voices["alice"].__dict__, "gpt_weights": "/nope.ckpt"})
    with pytest.raises(BackendError, match=r"/set_gpt_weights \(HTTP 400\).*change weight failed.*nope.ckpt"):
        c.synthesize(SENTENCE, "en", "alice")


@pytest.mark.parametrize("streaming", [False, True])
def test_truncated_stream(weights, url, server, streaming):
    server.behaviour = "cut"
    with pytest.raises(BackendError, match="cut off|truncated"):
        client(weights, url).synthesize("First part. Second part. Third part.", "en", "alice", streaming=streaming)


def test_half_sample_at_the_end(weights, url, server):
    server.behaviour = "odd"
    with pytest.raises(BackendError, match="mid-sample"):
        client(weights, url, media_type="raw").synthesize(SENTENCE, "en", "alice")


def test_not_audio(weights, url, server):
    server.behaviour = "html"
    with pytest.raises(BackendError, match="did not return a WAV"):
        client(weights, url).synthesize(SENTENCE, "en", "alice")


def test_pcm_stream_parser_byte_by_byte():
    """A WAV arriving one byte at a time parses the same as in one piece."""
    import io

    import soundfile as sf

    pcm = tone("abc", 16000)
    buf = io.BytesIO()
    sf.write(buf, pcm, 16000, format="wav")
    stream = PcmStream("wav", 0)
    out = np.concatenate([stream.feed(bytes([b])) for b in buf.getvalue()])
    stream.finish()
    assert stream.sample_rate == 16000 and np.array_equal(out, pcm.astype(np.float32) / 32768.0)


# ---------------------------------------------------------------- start the server / in-process
def test_start_server_from_checkout(weights):
    port = _free_port()
    cfg = make_cfg(weights, gpt_sovits_url=f"http://127.0.0.1:{port}", start_server=True,
                   gpt_sovits_dir=str(CHECKOUT), gpt_sovits_python=sys.executable)
    engine = load_engine(cfg)
    try:
        assert engine.server is not None and engine.server.proc.poll() is None
        rate, samples = engine.synthesize(SENTENCE, "en", "alice")
        np.testing.assert_allclose(samples, expected(SENTENCE, rate), atol=2e-3)
    finally:
        engine.server.stop()
    assert engine.server.proc.poll() is not None


def test_in_process(weights):
    tts = Tts.load(make_cfg(weights, gpt_sovits_mode="inprocess", gpt_sovits_dir=str(CHECKOUT)))
    assert tts.backend == "gpt_sovits" and isinstance(tts._engine.client, GptSovitsInProcess)
    audio = tts.synthesize(SENTENCE, "en", voice="bob")
    np.testing.assert_allclose(audio.samples, expected(SENTENCE), atol=2e-3)
    pipeline = tts._engine.client.pipeline
    assert [Path(p).name for _, p in pipeline.weight_switches] == ["bob.ckpt", "bob.pth"]
    tts.synthesize("Again with the same voice.", voice="bob")
    assert len(pipeline.weight_switches) == 2  # no reload for the same voice


def test_in_process_errors(weights, tmp_path):
    with pytest.raises(BackendUnavailable, match="not a GPT-SoVITS checkout"):
        load_engine(make_cfg(weights, gpt_sovits_mode="inprocess", gpt_sovits_dir=str(tmp_path)))
    tts = Tts.load(make_cfg(weights, gpt_sovits_mode="inprocess", gpt_sovits_dir=str(CHECKOUT)))
    with pytest.raises(BackendError, match="not supported"):
        tts._engine.client.synthesize("Bonjour.", "fr", "alice")


def test_missing_reference_audio(weights):
    cfg = make_cfg(weights).replace(**{"tts.voices": [{"name": "x", "ref_audio": "missing.wav"}]})
    with pytest.raises(BackendUnavailable, match="reference audio not found.*missing.wav"):
        load_engine(cfg)
