"""Speech synthesis stage (`Tts`): text in Chinese, English or both -> speech, whole or sentence by sentence.
Backends: "builtin" = piper.py (English) + zhtts.py (Chinese), a mixed sentence cut into runs of each language; and
gpt_sovits.py (a voice clone: its api_v2 server or in-process). tts.backend "auto" or "gpt_sovits" takes GPT-SoVITS
when a voice and its weights are configured, else the built-in voices.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Iterator

import numpy as np

from avatar.core.config import AvatarConfig
from avatar.core.errors import AvatarError, BackendError, BackendUnavailable, EmptyText
from avatar.core.media import resample
from avatar.core.text import check_text, detect_language, is_speakable, split_by_language, split_sentences
from avatar.core.timing import best_of
from avatar.core.types import Audio, Visemes, check_language

from .base import BUILTIN_SAMPLE_RATE, BUILTIN_VOICES

__all__ = ["Tts", "BUILTIN_SAMPLE_RATE", "bench"]

log = logging.getLogger(__name__)

SENTENCE_GAP_S = 0.12  # silence between sentences in synthesize()
SPEED_RANGE = (0.5, 2.0)  # voice speed: half to twice the normal pace


# ---------------------------------------------------------------- built-in engines
class BuiltinEngine:
    """English runs -> Piper, Chinese runs -> zhtts; returns one float32 array at BUILTIN_SAMPLE_RATE."""

    sample_rate = BUILTIN_SAMPLE_RATE

    def __init__(self, length_scale: float = 1.0, use_cuda: bool = False) -> None:
        from .piper import PiperEnglish
        from .piper_voices import installed_voices
        from .zhtts import ZhttsChinese

        self.engines = {"en": PiperEnglish(length_scale, use_cuda), "zh": ZhttsChinese()}
        # further English voices installed from the registries (the first is the default): loaded on first use
        self._more = {v.name: (v.model, v.config) for v in installed_voices()[1:]}
        self._english: dict[str, object] = {}
        self._make_english = functools.partial(PiperEnglish, length_scale, use_cuda)
        self._lock = threading.Lock()

    def voices(self) -> list[str]:
        return list(BUILTIN_VOICES) + list(self._more)

    def _engine(self, lang: str, voice: str):
        """English runs in the chosen Piper voice; Chinese runs always in zhtts's one voice."""
        if lang != "en" or voice not in self._more:
            return self.engines[lang]
        with self._lock:
            if voice not in self._english:
                self._english[voice] = self._make_english(self._more[voice])
            return self._english[voice]

    def plan(self, sentence: str, language: str) -> list[tuple[str, str]]:
        """The (text, engine language) runs a sentence is spoken as.

        The script decides (Piper cannot read Chinese characters, zhtts drops Latin letters), whatever the caller's
        language; that only picks the reader of runs without letters ("2024").
        """
        return split_by_language(sentence, default=detect_language(sentence) if language == "auto" else language)

    def synthesize(self, sentence: str, language: str, voice: str,
                   speed: float = 1.0) -> tuple[np.ndarray, Visemes | None]:
        """-> (samples, the visemes spoken: both engines know their phonemes and durations)."""
        parts: list[np.ndarray] = []
        timed: list[tuple[Visemes | None, float]] = []
        for text, lang in self.plan(sentence, language):
            engine = self._engine(lang, voice)
            samples, visemes = engine.synthesize(text, speed)
            timed.append((visemes, sum(len(p) for p in parts) / self.sample_rate))
            parts.append(resample(Audio(samples, engine.sample_rate), self.sample_rate).samples)
        if not parts:
            return np.zeros(0, np.float32), None
        return np.concatenate(parts), Visemes.join(timed)


# ---------------------------------------------------------------- the stage
class Tts:
    """The TTS stage. Build with Tts.load(cfg); synthesize() / stream() text in zh, en or both.

        tts = Tts.load(cfg)
        tts.synthesize("你好！I am your avatar.") -> Audio (float32 mono, tts.sample_rate)
        for sentence, audio in tts.stream(reply): ...   # one Audio per sentence, for the streaming turn

    The built-in backend picks the voice per run of text: a mixed sentence is cut into Chinese and English runs
    (avatar.core.text.split_by_language), each spoken by its own engine and resampled to one rate.
    """

    def __init__(self, cfg: AvatarConfig, backend: str, engine, fallback_reason: str | None, load_s: float) -> None:
        self.cfg, self.backend, self._engine = cfg, backend, engine
        self.fallback_reason, self.load_s = fallback_reason, load_s
        self.sample_rate = engine.sample_rate

    @classmethod
    def load(cls, cfg: AvatarConfig) -> "Tts":
        t0 = time.perf_counter()
        wanted = cfg.tts.backend
        if wanted not in ("auto", "builtin", "gpt_sovits"):
            raise BackendUnavailable(f"unknown TTS backend {wanted!r}; use auto, builtin or gpt_sovits")
        reason = None
        if wanted in ("auto", "gpt_sovits"):
            try:
                from .gpt_sovits import GptSovitsEngine, load_engine

                return cls(cfg, "gpt_sovits", GptSovitsEngine(load_engine(cfg)), None, time.perf_counter() - t0)
            except BackendUnavailable as e:
                reason = str(e)
                level = logging.WARNING if wanted == "gpt_sovits" else logging.INFO
                log.log(level, "TTS: GPT-SoVITS not used (%s); falling back to the built-in voices", reason)
        use_cuda = cfg.device.startswith("cuda") and _onnx_has_cuda()
        engine = BuiltinEngine(cfg.tts.length_scale, use_cuda)
        return cls(cfg, "builtin", engine, reason, time.perf_counter() - t0)

    def voices(self) -> list[str]:
        return self._engine.voices()

    def check(self, text: str, language: str = "auto", voice: str | None = None) -> tuple[str, str, str]:
        """Validates text, language and voice; returns them cleaned (voice None -> the first voice)."""
        lang = check_language(language)
        clean = check_text(text, self.cfg.limits.max_text_chars)
        if not is_speakable(clean):
            raise EmptyText("the text has nothing to speak (no letters, digits or Chinese characters)")
        names = self.voices()
        chosen = voice or names[0]
        if chosen not in names:
            raise AvatarError(f"unknown voice {voice!r}; choose one of: {', '.join(names)}")
        return clean, lang, chosen

    def stream(self, text: str, language: str = "auto", voice: str | None = None,
               speed: float | None = None) -> Iterator[tuple[str, Audio]]:
        """Yields (sentence, Audio) as each sentence is synthesised (all at self.sample_rate). speed: 1 normal,
        0.5-2 (None: config tts.speed)."""
        clean, lang, chosen = self.check(text, language, voice)
        rate = check_speed(self.cfg.tts.speed if speed is None else speed)
        for sentence in split_sentences(clean):
            if not is_speakable(sentence):
                continue
            spoken = self._engine.synthesize(sentence, lang, chosen, rate)
            # the built-in engines know what they said: (samples, visemes); GPT-SoVITS gives samples only
            samples, visemes = spoken if isinstance(spoken, tuple) else (spoken, None)
            if samples.size == 0:
                raise BackendError(f"the {self.backend} voice produced no audio for {sentence!r}")
            yield sentence, Audio(np.clip(samples, -1.0, 1.0).astype(np.float32), self.sample_rate, visemes)

    def synthesize(self, text: str, language: str = "auto", voice: str | None = None,
                   speed: float | None = None) -> Audio:
        gap = np.zeros(int(SENTENCE_GAP_S * self.sample_rate), np.float32)
        parts: list[np.ndarray] = []
        timed: list[tuple[Visemes | None, float]] = []
        for _, audio in self.stream(text, language, voice, speed):
            timed.append((audio.visemes, sum(len(p) for p in parts) / self.sample_rate))
            parts += [audio.samples, gap]
        return Audio(np.concatenate(parts[:-1]), self.sample_rate, Visemes.join(timed))

    def plan(self, text: str, language: str = "auto") -> list[tuple[str, str]]:
        """Which engine speaks which run (built-in backend): [(text, "zh"|"en"), ...] over all sentences."""
        clean, lang, _ = self.check(text, language)
        if not isinstance(self._engine, BuiltinEngine):
            return [(s, detect_language(s) if lang == "auto" else lang) for s in split_sentences(clean)]
        return [run for s in split_sentences(clean) for run in self._engine.plan(s, lang)]


def check_speed(speed) -> float:
    """A speaking speed: 1 normal, from SPEED_RANGE[0] (slower) to SPEED_RANGE[1] (faster)."""
    from avatar.core.validate import finite_number

    return finite_number(speed, "the voice speed", *SPEED_RANGE)


def _onnx_has_cuda() -> bool:
    try:
        import onnxruntime

        return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except ImportError:
        return False


# ---------------------------------------------------------------- benchmark
BENCH_TEXT = {
    "en": "The quick brown fox jumps over the lazy dog. I will answer your question as well as I can.",
    "zh": "今天天气很好，我们一起去公园散步吧。我会尽力回答你的问题。",
}


def bench(tts: Tts, repeats: int = 2) -> dict:
    """JSON-able timings: load time and real-time factor (synthesis s / audio s) per language (best of repeats).

    cpu_s: CPU time of this process (all threads), a check on wall times taken on a shared machine.
    For GPT-SoVITS over HTTP the work happens in the server, so only wall time means anything.
    """
    result: dict = {"stage": "tts", "backend": tts.backend, "load_s": round(tts.load_s, 3),
                    "sample_rate": tts.sample_rate, "fallback_reason": tts.fallback_reason, "languages": {}}
    for lang, text in BENCH_TEXT.items():
        tts.synthesize(text, lang)  # warm-up (first tflite / onnx call allocates)
        audio, best, cpu_s = best_of(lambda: tts.synthesize(text, lang), repeats)
        result["languages"][lang] = {"audio_s": round(audio.duration_s, 3), "synth_s": round(best, 3),
                                     "rtf": round(best / audio.duration_s, 4), "cpu_s": round(cpu_s, 3)}
    return result
