"""What the ASR stage and its backends share: the input rate, the result, the Whisper backends' interface and the
traditional -> simplified conversion of their Chinese text."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from avatar.core.cancel import CancelToken

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # both Whisper and Paraformer take 16 kHz mono
WHISPER_LANGUAGES = ("zh", "en")  # what the app supports: Whisper's language detection is limited to these


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str  # "zh" | "en"
    duration_s: float  # length of the input audio
    backend: str  # "whisper" | "whisper-hf" | "funasr"


class WhisperLike(Protocol):
    """What the stage needs of a Whisper backend (whisper.py: CTranslate2, whisper_hf.py: PyTorch)."""

    name: str  # the Transcript's backend
    device: str

    def detect_language(self, samples: np.ndarray) -> str:
        """'zh' or 'en' for 16 kHz float32 samples."""

    def transcribe(self, samples: np.ndarray, language: str | None, cancel: CancelToken) -> tuple[str, str]:
        """(text, language); language None = detect (zh / en); raises Cancelled when cancel is set."""


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
