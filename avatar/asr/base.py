"""What the ASR stage and its backends share: the input rate and the result."""
from __future__ import annotations

from dataclasses import dataclass

SAMPLE_RATE = 16000  # both Whisper and Paraformer take 16 kHz mono


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str  # "zh" | "en"
    duration_s: float  # length of the input audio
    backend: str  # "whisper" | "funasr"
