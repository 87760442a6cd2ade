"""Speech recognition stage (`Asr`): speech -> text, Chinese or English. Backends: whisper.py (faster-whisper over
the packaged Whisper base; loaded unless whisper-hf runs, it also detects the language), whisper_hf.py (a Hugging Face
Whisper folder on PyTorch, for GPUs CTranslate2 cannot use) and funasr.py (FunASR Paraformer from local folders).
asr.backend "auto" or "funasr" takes Paraformer for each language whose folder is present, else Whisper;
"whisper-hf" takes the folder [asr] whisper_hf_dir, else the packaged Whisper ("auto" never picks it).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from avatar.core.cancel import NEVER, CancelToken
from avatar.core.config import CHOICES, AvatarConfig
from avatar.core.devices import resolve_device
from avatar.core.errors import BackendUnavailable, NoSpeech, WeightsError
from avatar.core.media import check_duration, check_not_silent, load_audio, resample
from avatar.core.paths import SPEECH_FIXTURES
from avatar.core.timing import best_of
from avatar.core.types import Audio, check_language

from .base import SAMPLE_RATE, Transcript, WhisperLike, to_simplified
from .whisper import WhisperBackend, prepare_whisper_base

__all__ = ["Asr", "Transcript", "SAMPLE_RATE", "bench", "prepare_whisper_base", "to_simplified"]

if TYPE_CHECKING:
    from .funasr import FunAsrBackend
    from .whisper_hf import WhisperHfBackend

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- the stage
class Asr:
    """The ASR stage. Build with Asr.load(cfg); call transcribe(audio, language).

        asr = Asr.load(cfg)
        asr.transcribe(load_audio("question.wav"), language="auto") -> Transcript(text, language, duration_s, backend)
    """

    def __init__(self, cfg: AvatarConfig, backend: str, device: str, whisper: WhisperLike,
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
        funasr, whisper, reason = None, None, None
        if wanted == "whisper-hf":
            whisper, reason = _try_whisper_hf(cfg, device)
        elif wanted in ("auto", "funasr"):
            funasr, reason = _try_funasr(cfg, device)
        if reason is not None:
            level = logging.INFO if wanted == "auto" else logging.WARNING
            name = "whisper-hf" if wanted == "whisper-hf" else "FunASR"
            log.log(level, "ASR: %s not used (%s); falling back to Whisper", name, reason)
        # Whisper is also needed beside FunASR: to detect the language, and for a language with no Paraformer folder.
        whisper = whisper or _load_whisper(cfg, device)
        backend = "funasr" if funasr is not None else whisper.name
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

    def transcribe(self, audio: Audio, language: str = "auto", cancel: CancelToken = NEVER) -> Transcript:
        """cancel: checked before recognition and between Whisper's segments (a stopped request frees the model at
        the end of the current 30 s window instead of transcribing the whole clip; whisper-hf checks it between
        tokens); raises Cancelled."""
        audio16, lang = self.check(audio, language)
        cancel.check()
        text, used_lang, used_backend = self._recognise(audio16.samples, lang, cancel)
        if not text.strip():
            raise NoSpeech("no speech heard: nothing could be recognised in the recording")
        return Transcript(text.strip(), used_lang, audio.duration_s, used_backend)

    def transcribe_file(self, path: str | Path, language: str = "auto") -> Transcript:
        return self.transcribe(load_audio(path, SAMPLE_RATE, self.cfg.limits.max_audio_s), language)

    def _recognise(self, samples: np.ndarray, lang: str, cancel: CancelToken = NEVER) -> tuple[str, str, str]:
        if self._funasr is not None:
            routed = lang if lang != "auto" else self._route_language(samples)
            if routed in self._funasr.languages:
                return self._funasr.transcribe(samples, routed, self.cfg.asr.hotwords), routed, "funasr"
            log.info("ASR: no Paraformer folder for %r; using Whisper for this recording", routed)
            lang = routed
        text, used = self._whisper.transcribe(samples, None if lang == "auto" else lang, cancel)
        return text, used, self._whisper.name

    def _route_language(self, samples: np.ndarray) -> str:
        return self._whisper.detect_language(samples)


def _load_whisper(cfg: AvatarConfig, device: str) -> WhisperBackend:
    model_dir = cfg.weights_path(cfg.asr.whisper_model_dir) if cfg.asr.whisper_model_dir else prepare_whisper_base()
    if not (Path(model_dir) / "model.bin").is_file():
        raise BackendUnavailable(f"no CTranslate2 Whisper model in {model_dir} (model.bin missing)")
    try:
        return WhisperBackend(Path(model_dir), device, cfg.asr.whisper_compute_type, cfg.asr.whisper_window_s)
    except ImportError as e:
        raise BackendUnavailable(f"faster-whisper is not installed ({e})") from None


def _try_whisper_hf(cfg: AvatarConfig, device: str) -> tuple[WhisperHfBackend | None, str | None]:
    """(WhisperHfBackend, None) when [asr] whisper_hf_dir holds a usable folder, else (None, reason)."""
    from .whisper_hf import WhisperHfBackend, configured_folder

    try:
        return WhisperHfBackend.load(configured_folder(cfg), device, cfg.asr.whisper_hf_max_new_tokens), None
    except (BackendUnavailable, WeightsError) as e:
        return None, str(e)


def _try_funasr(cfg: AvatarConfig, device: str) -> tuple[FunAsrBackend | None, str | None]:
    """(FunAsrBackend, None) when at least one Paraformer folder is usable, else (None, reason)."""
    from .funasr import FunAsrBackend, find_folders

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
    clip = Path(path) if path else SPEECH_FIXTURES / "jfk.flac"
    audio = load_audio(clip, SAMPLE_RATE)
    asr.transcribe(audio, language)
    result, best, cpu_s = best_of(lambda: asr.transcribe(audio, language), repeats)
    return {"stage": "asr", "backend": asr.backend, "device": asr.device, "clip": clip.name,
            "audio_s": round(audio.duration_s, 3), "load_s": round(asr.load_s, 3), "transcribe_s": round(best, 3),
            "rtf": round(best / audio.duration_s, 4),
            "cpu_s": round(cpu_s, 3), "language": result.language, "text": result.text,
            "fallback_reason": asr.fallback_reason}
