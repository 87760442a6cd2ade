"""GPT-SoVITS voice cloning, through its api_v2 HTTP server (default) or in-process from a checkout.

HTTP contract (RVC-Boss/GPT-SoVITS api_v2.py):
  GET or POST /tts  text, text_lang, ref_audio_path, prompt_text, prompt_lang, media_type (wav|raw|ogg|aac),
                    streaming_mode, text_split_method, ...  -> 200 audio; 400 JSON {"message": ..., "Exception": ...}
  Non-streaming wav is a whole WAV file. Streaming wav is a WAV header (data size 0) followed by raw int16 chunks.
  raw is int16 little-endian mono PCM with no header (the caller must know the rate).
  GET /set_gpt_weights?weights_path=..., /set_sovits_weights?weights_path=...  -> 200 / 400 JSON
In-process: GPT_SoVITS.TTS_infer_pack.TTS: TTS(TTS_Config(path)).run(inputs) yields (sample_rate, int16 audio).
The server runs in its own environment (its pins clash with ours); start_server launches it from the checkout.
"""
from __future__ import annotations

import atexit
import logging
import os
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import urlparse

import numpy as np

from avatar.core.config import AvatarConfig
from avatar.core.errors import AvatarError, BackendError, BackendUnavailable
from avatar.core.media import resample
from avatar.core.text import detect_language
from avatar.core.types import Audio

from .base import GPT_SOVITS_SAMPLE_RATE

log = logging.getLogger(__name__)

API_LANG = {"zh": "zh", "en": "en"}  # our codes -> GPT-SoVITS text_lang ("zh" also reads embedded English)
STARTUP_TIMEOUT_S = 300.0  # loading BERT + HuBERT + the voice takes minutes on a cold disk
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Voice:
    """A voice with every path made absolute (the server resolves relative paths against its own folder)."""

    name: str
    gpt_weights: str
    sovits_weights: str
    ref_audio: str
    ref_text: str
    ref_lang: str


def resolve_voices(cfg: AvatarConfig) -> dict[str, Voice]:
    def path(p: str) -> str:
        return str(cfg.weights_path(p).resolve()) if p else ""

    out = {}
    for v in cfg.tts.voices:
        out[v.name] = Voice(v.name, path(v.gpt_weights), path(v.sovits_weights), path(v.ref_audio), v.ref_text,
                            v.ref_lang)
    for kind in ("gpt_weights", "sovits_weights"):
        # a voice without its own weights would keep whatever the previous voice loaded (the server's start-up
        # weights are not known here, so they cannot be restored): all voices set them, or none does
        own = [v.name for v in out.values() if getattr(v, kind)]
        if own and len(own) < len(out):
            missing = ", ".join(repr(v) for v in out if v not in own)
            raise BackendUnavailable(f"[[tts.voices]] {missing} {'has' if missing.count(',') == 0 else 'have'} no "
                                     f"{kind} while {own[0]!r} has: give every voice its {kind} (switching back "
                                     "to the server's default weights is not possible), or none")
    return out


def request_params(voice: Voice, text: str, lang: str, media_type: str, streaming: bool, speed: float = 1.0) -> dict:
    return {"text": text, "text_lang": API_LANG.get(lang, lang), "ref_audio_path": voice.ref_audio,
            "prompt_text": voice.ref_text, "prompt_lang": API_LANG.get(voice.ref_lang, voice.ref_lang),
            "text_split_method": "cut5", "batch_size": 1, "media_type": media_type, "streaming_mode": streaming,
            "speed_factor": speed}


# ---------------------------------------------------------------- audio parsing
class PcmStream:
    """Turns the bytes of a wav (whole or streamed) or raw response into float32 chunks, checking for truncation."""

    def __init__(self, media_type: str, raw_sample_rate: int) -> None:
        self.media_type, self.sample_rate = media_type, raw_sample_rate
        self._buf = b""
        self._header_done = media_type == "raw"
        self._declared_bytes: int | None = None  # data size from a whole-file WAV header; None when streamed
        self._received = 0

    def feed(self, data: bytes) -> np.ndarray:
        self._buf += data
        if not self._header_done and not self._parse_header():
            return np.zeros(0, np.float32)
        usable = len(self._buf) // 2 * 2
        pcm, self._buf = self._buf[:usable], self._buf[usable:]
        self._received += len(pcm)
        return np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0

    def finish(self) -> None:
        if not self._header_done:
            raise BackendError("GPT-SoVITS returned no WAV audio (the answer is empty or not a WAV file)")
        if self._buf:
            raise BackendError("GPT-SoVITS audio was cut off mid-sample (truncated stream)")
        if self._declared_bytes is not None and self._received < self._declared_bytes:
            raise BackendError(f"GPT-SoVITS audio is truncated: {self._received} of {self._declared_bytes} bytes")

    def _parse_header(self) -> bool:
        """Consumes the RIFF header when enough bytes have arrived; False while waiting for more."""
        b = self._buf
        if len(b) >= 12 and (b[:4] != b"RIFF" or b[8:12] != b"WAVE"):
            raise BackendError("GPT-SoVITS did not return a WAV file (bad header)")
        pos = 12
        while len(b) >= pos + 8:
            cid, size = b[pos:pos + 4], struct.unpack("<I", b[pos + 4:pos + 8])[0]
            if cid == b"data":
                self._declared_bytes = size if 0 < size < 0xFFFFFFFF else None
                self._buf, self._header_done = b[pos + 8:], True
                return True
            if len(b) < pos + 8 + size:
                return False
            if cid == b"fmt ":
                self._read_fmt(b[pos + 8:pos + 8 + size])
            pos += 8 + size + (size & 1)
        return False

    def _read_fmt(self, fmt: bytes) -> None:
        audio_format, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
        if audio_format != 1 or bits != 16 or channels != 1:
            raise BackendError(f"GPT-SoVITS WAV is not 16-bit mono PCM (format {audio_format}, {bits} bit, "
                               f"{channels} channels); use media_type wav")
        self.sample_rate = rate


def collect(chunks: Iterable[np.ndarray]) -> np.ndarray:
    parts = [c for c in chunks if c.size]
    if not parts:
        raise BackendError("GPT-SoVITS returned no audio samples")
    return np.concatenate(parts).astype(np.float32)


# ---------------------------------------------------------------- HTTP client
class GptSovitsHttp:
    """Client of a running api_v2 server. synthesize() -> (sample_rate, float32 samples)."""

    def __init__(self, url: str, voices: dict[str, Voice], timeout_s: float, media_type: str = "wav",
                 raw_sample_rate: int = 32000, method: str = "POST") -> None:
        self.url, self.voices, self.timeout_s = url.rstrip("/"), voices, timeout_s
        self.media_type, self.raw_sample_rate, self.method = media_type, raw_sample_rate, method.upper()
        self._current: str | None = None
        self.server: ServerProcess | None = None  # set when we started the server ourselves
        self._lock = threading.Lock()  # the server holds one voice at a time: switch + synthesize together

    def is_up(self) -> bool:
        """Any HTTP answer counts (api_v2 has no health route; /docs is FastAPI's page)."""
        import requests

        try:
            requests.get(self.url + "/docs", timeout=CONNECT_TIMEOUT_S)
            return True
        except requests.RequestException:
            return False

    def synthesize(self, text: str, lang: str, voice: str, streaming: bool = False,
                   speed: float = 1.0) -> tuple[int, np.ndarray]:
        with self._lock:
            self._use_voice(voice)
            stream = PcmStream(self.media_type, self.raw_sample_rate)
            samples = collect(self.iter_chunks(self.voices[voice], text, lang, stream, streaming, speed))
            return stream.sample_rate, samples

    def iter_chunks(self, v: Voice, text: str, lang: str, stream: PcmStream, streaming: bool,
                    speed: float = 1.0) -> Iterator[np.ndarray]:
        """float32 chunks as they arrive; stream.sample_rate is known once the first chunk is out."""
        import requests

        params = request_params(v, text, lang, self.media_type, streaming, speed)
        with self._request("/tts", params) as resp:
            try:
                for data in resp.iter_content(chunk_size=16384):
                    yield stream.feed(data)
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError,
                    requests.exceptions.Timeout) as e:
                if "timed out" in str(e).lower() or isinstance(e, requests.exceptions.Timeout):
                    raise BackendError(f"GPT-SoVITS stopped sending audio for {self.timeout_s:g} s (timeout)") from None
                raise BackendError(f"the GPT-SoVITS audio stream was cut off ({type(e).__name__})") from None
        stream.finish()

    def _use_voice(self, name: str) -> None:
        if name == self._current:
            return
        v = self.voices[name]
        for route, path in (("/set_gpt_weights", v.gpt_weights), ("/set_sovits_weights", v.sovits_weights)):
            if path:
                with self._request(route, {"weights_path": path}, method="GET"):
                    pass
        self._current = name

    def _request(self, route: str, params: dict, method: str | None = None):
        import requests

        method = method or self.method
        kwargs = {"json": params} if method == "POST" else {"params": _query(params)}
        try:
            resp = requests.request(method, self.url + route, stream=True,
                                    timeout=(CONNECT_TIMEOUT_S, self.timeout_s), **kwargs)
        except requests.exceptions.ConnectionError:
            raise BackendUnavailable(f"the GPT-SoVITS server at {self.url} is not answering (is it running?)") from None
        except requests.exceptions.Timeout:
            raise BackendError(f"GPT-SoVITS did not answer {route} within {self.timeout_s:g} s (timeout)") from None
        if resp.status_code != 200:
            message = _error_message(resp)
            resp.close()
            raise BackendError(f"GPT-SoVITS refused {route} (HTTP {resp.status_code}): {message}")
        return resp


def _query(params: dict) -> dict:
    """GET query values: FastAPI reads booleans as true/false."""
    return {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in params.items()}


def _error_message(resp) -> str:
    try:
        body = resp.json()
    except ValueError:
        return (resp.text or "").strip()[:300] or "no details"
    if isinstance(body, dict):
        parts = [str(body.get("message", "")), str(body.get("Exception", ""))]
        return ": ".join(p for p in parts if p) or str(body)[:300]
    return str(body)[:300]


# ---------------------------------------------------------------- server process
class ServerProcess:
    """api_v2.py started from a GPT-SoVITS checkout; terminated when we exit (we only stop what we started)."""

    def __init__(self, checkout: Path, config: str, url: str, python: str, log_path: Path) -> None:
        port = urlparse(url).port or 9880
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = open(log_path, "ab")
        cmd = [python or sys.executable, "api_v2.py", "-a", "127.0.0.1", "-p", str(port), "-c", config]
        log.info("TTS: starting GPT-SoVITS: %s (in %s, log %s)", " ".join(cmd), checkout, log_path)
        try:
            self.proc = subprocess.Popen(cmd, cwd=checkout, stdout=self._log, stderr=subprocess.STDOUT)
        except OSError as e:
            raise BackendUnavailable(f"cannot start the GPT-SoVITS server: {e}") from None
        atexit.register(self.stop)

    def wait_until_up(self, client: GptSovitsHttp, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BackendUnavailable(f"the GPT-SoVITS server exited with code {self.proc.returncode}; "
                                         f"last log lines: {self._tail()}")
            if client.is_up():
                return
            time.sleep(1.0)
        self.stop()
        raise BackendUnavailable(f"the GPT-SoVITS server did not answer within {timeout_s:g} s (log: {self.log_path})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()

    def _tail(self) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-5:])
        except OSError:
            return "(no log)"


# ---------------------------------------------------------------- in-process
class GptSovitsInProcess:
    """Imports GPT_SoVITS.TTS_infer_pack.TTS from a checkout and runs it in this process."""

    _import_lock = threading.Lock()

    def __init__(self, checkout: Path, config: Path, voices: dict[str, Voice]) -> None:
        self.voices = voices
        self._current: str | None = None
        self._lock = threading.Lock()
        TTS, TTS_Config = self._import(checkout)
        try:
            with self._import_lock:  # its config holds paths relative to the checkout
                cwd = os.getcwd()
                os.chdir(checkout)
                try:
                    self.pipeline = TTS(TTS_Config(str(config)))
                finally:
                    os.chdir(cwd)
        except AvatarError:
            raise
        except Exception as e:
            raise BackendUnavailable(f"GPT-SoVITS failed to load from {config}: {type(e).__name__}: {e}") from e

    @staticmethod
    def _import(checkout: Path):
        if not (checkout / "GPT_SoVITS").is_dir():
            raise BackendUnavailable(f"{checkout} is not a GPT-SoVITS checkout (no GPT_SoVITS/ folder)")
        for p in (str(checkout), str(checkout / "GPT_SoVITS")):
            if p not in sys.path:
                sys.path.insert(0, p)
        try:
            from GPT_SoVITS.TTS_infer_pack.TTS import TTS, TTS_Config
        except Exception as e:  # its import pulls many packages: say which one is missing
            raise BackendUnavailable(f"cannot import GPT-SoVITS from {checkout}: {type(e).__name__}: {e}") from e
        return TTS, TTS_Config

    def synthesize(self, text: str, lang: str, voice: str, streaming: bool = False,
                   speed: float = 1.0) -> tuple[int, np.ndarray]:
        v = self.voices[voice]
        inputs = request_params(v, text, lang, "wav", False, speed)
        inputs.update(return_fragment=streaming, streaming_mode=False)
        with self._lock:
            self._use_voice(voice)
            try:
                results = list(self.pipeline.run(inputs))
            except Exception as e:
                raise BackendError(f"GPT-SoVITS failed: {type(e).__name__}: {e}") from e
        if not results:
            raise BackendError("GPT-SoVITS returned no audio")
        rate = int(results[0][0])
        return rate, collect(_to_float(a) for _, a in results)

    def _use_voice(self, name: str) -> None:
        if name == self._current:
            return
        v = self.voices[name]
        try:
            if v.gpt_weights:
                self.pipeline.init_t2s_weights(v.gpt_weights)
            if v.sovits_weights:
                self.pipeline.init_vits_weights(v.sovits_weights)
        except Exception as e:
            raise BackendError(f"GPT-SoVITS could not switch to voice {name!r}: {type(e).__name__}: {e}") from e
        self._current = name


def _to_float(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.float32).ravel() / 32768.0
    return a.astype(np.float32).ravel()


# ---------------------------------------------------------------- construction from the config
def load_engine(cfg: AvatarConfig):
    """GptSovitsHttp (server answering, or started) or GptSovitsInProcess; BackendUnavailable with the reason."""
    t = cfg.tts
    voices = resolve_voices(cfg)
    if not voices:
        raise BackendUnavailable("no GPT-SoVITS voice configured ([[tts.voices]] with ref_audio and ref_text)")
    missing = [f"{v.name}: {v.ref_audio or '(empty ref_audio)'}" for v in voices.values() if not Path(v.ref_audio).is_file()]
    if missing:
        raise BackendUnavailable(f"GPT-SoVITS reference audio not found: {'; '.join(missing)}")
    checkout = cfg.weights_path(t.gpt_sovits_dir).resolve() if t.gpt_sovits_dir else None
    if t.gpt_sovits_mode == "inprocess":
        if checkout is None:
            raise BackendUnavailable("tts.gpt_sovits_dir must name a GPT-SoVITS checkout for in-process mode")
        return GptSovitsInProcess(checkout, _config_path(checkout, t.gpt_sovits_config), voices)
    if t.gpt_sovits_mode != "http":
        raise BackendUnavailable(f"unknown tts.gpt_sovits_mode {t.gpt_sovits_mode!r}; use http or inprocess")
    client = GptSovitsHttp(t.gpt_sovits_url, voices, t.timeout_s)
    if client.is_up():
        return client
    if not (t.start_server and checkout is not None and (checkout / "api_v2.py").is_file()):
        raise BackendUnavailable(f"the GPT-SoVITS server at {t.gpt_sovits_url} is not answering "
                                 "(start it, or set tts.start_server and tts.gpt_sovits_dir)")
    server = ServerProcess(checkout, t.gpt_sovits_config, t.gpt_sovits_url, t.gpt_sovits_python,
                           Path(cfg.output_dir) / "gpt_sovits_server.log")
    server.wait_until_up(client)
    client.server = server
    return client


def _config_path(checkout: Path, config: str) -> Path:
    p = Path(config)
    return p if p.is_absolute() else checkout / p


__all__ = ["GptSovitsHttp", "GptSovitsInProcess", "PcmStream", "ServerProcess", "Voice", "load_engine",
           "resolve_voices"]


class GptSovitsEngine:
    """A GPT-SoVITS client (HTTP or in-process) behind the same interface as BuiltinEngine."""

    sample_rate = GPT_SOVITS_SAMPLE_RATE

    def __init__(self, client) -> None:
        self.client = client

    def voices(self) -> list[str]:
        return list(self.client.voices)

    def synthesize(self, sentence: str, language: str, voice: str, speed: float = 1.0) -> np.ndarray:
        lang = detect_language(sentence) if language == "auto" else language
        rate, samples = self.client.synthesize(sentence, lang, voice, speed=speed)
        return resample(Audio(samples, rate), self.sample_rate).samples
