"""Hand-off formats between stages, checked on entry (see ARCHITECTURE.md "Hand-off formats")."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from .errors import BadAudio, BadImage, UnknownEmotion, UnknownLanguage

if TYPE_CHECKING:
    from .config import ChatConfig

EMOTIONS: tuple[str, ...] = ("angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised")
"""The 8 labels in EAT's index order (y_trg 0..7)."""

LANGUAGES: tuple[str, ...] = ("auto", "zh", "en")
FPS = 25

ProgressFn = Callable[[float | None, str], None]
"""progress(fraction done or None when the total is unknown, a short text such as "rendered 40/250 frames")."""


VISEMES: tuple[str, ...] = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou")
"""Mouth shapes of speech (the MPEG-4 / Oculus set): silence; p b m; f v; th; t d; k g; ch sh; s z; n l; r;
and the vowels a, e, i, o, u."""


@dataclass(frozen=True)
class Visemes:
    """What the mouth says when: one viseme (VISEMES) per time span of the speech, from the TTS that made it
    (it knows the phonemes it spoke and their durations). Spans are ascending and do not overlap."""

    start_s: np.ndarray  # (k,) float64
    end_s: np.ndarray  # (k,) float64
    labels: tuple[str, ...]  # (k,) each one of VISEMES

    def __post_init__(self) -> None:
        assert len(self.start_s) == len(self.end_s) == len(self.labels), "one start and end per viseme"
        assert all(label in VISEMES for label in self.labels), f"visemes must be among {VISEMES}"

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def join(cls, parts: "list[tuple[Visemes | None, float]]") -> "Visemes | None":
        """Visemes of speech made of pieces: (the piece's visemes, where the piece starts in s); None when a piece
        with sound has none (its mouth would go unexplained)."""
        if not parts or any(v is None for v, _ in parts):
            return None
        return cls(np.concatenate([v.start_s + t for v, t in parts]), np.concatenate([v.end_s + t for v, t in parts]),
                   tuple(label for v, _ in parts for label in v.labels))


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32 mono in [-1, 1], shape (n,)
    sample_rate: int  # Hz
    visemes: Visemes | None = None  # the mouth shapes over time, when the TTS that made this speech knows them

    def __post_init__(self) -> None:
        s = self.samples
        assert isinstance(s, np.ndarray) and s.dtype == np.float32 and s.ndim == 1, "audio must be float32 mono (n,)"
        assert self.sample_rate > 0
        if not np.isfinite(s).all():  # NaN or infinity would reach native code (warps, CTranslate2, ffmpeg)
            bad = int(np.count_nonzero(~np.isfinite(s)))
            raise BadAudio(f"the audio has {bad} invalid samples (NaN or infinity): it is damaged; record or "
                           "export it again")

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class PoseSequence:
    angles_deg: np.ndarray  # (T, 3) float32: yaw, pitch, roll in degrees
    translation: np.ndarray  # (T, 3) float32: x, y, z (EAT's t units; x/y ~ fraction of half the crop)
    fps: int = FPS
    start_frame: int = 0  # where row 0 sits in a longer performance (a Talk turn's later sentence): clocks such as
    # blinking continue from there instead of restarting with every clip

    def __post_init__(self) -> None:
        assert self.angles_deg.ndim == 2 and self.angles_deg.shape[1] == 3
        assert self.translation.shape == self.angles_deg.shape

    def __len__(self) -> int:
        return len(self.angles_deg)


def check_emotion(emotion: str) -> str:
    e = (emotion or "").strip().lower()
    if e not in EMOTIONS:
        raise UnknownEmotion(f"unknown emotion {emotion!r}; choose one of: {', '.join(EMOTIONS)}")
    return e


def check_language(lang: str | None) -> str:
    code = (lang or "auto").strip().lower()
    if code not in LANGUAGES:
        raise UnknownLanguage(f"unknown language code {lang!r}; use one of: {', '.join(LANGUAGES)}")
    return code


def check_rgb(image: np.ndarray) -> np.ndarray:
    """Asserts the image hand-off format: uint8 HxWx3 RGB."""
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        raise BadImage("expected an RGB image (uint8, height x width x 3)")
    return image


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Asserts the video hand-off format: uint8 (T,H,W,3)."""
    assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[3] == 3, "frames must be uint8 (T,H,W,3)"
    return frames


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings of one reply (every chat backend takes them)."""

    max_new_tokens: int = 160
    temperature: float = 0.7  # <= 0: greedy
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    seed: int = 0

    @classmethod
    def from_config(cls, c: "ChatConfig") -> "GenerationParams":
        return cls(c.max_new_tokens, c.temperature, c.top_p, c.repetition_penalty, c.seed)
