"""The talking-head interface shared by the engines: a prepared photo in, uint8 frame batches at 25 fps out.

An engine is built once (`load(config)`), prepares a photo once (`prepare`), then renders any number of clips of it.
`frames()` is a generator of uint8 (B,S,S,3) RGB batches at 25 fps, so a long clip is streamed to the encoder in
constant memory; the total number of frames is `n_frames(speech.duration_s)`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol

import numpy as np

from avatar.core.types import FPS, Audio, PoseSequence


def n_frames(duration_s: float, fps: int = FPS) -> int:
    """Frames for a clip: exactly as long as the audio, to the nearest frame (at least one)."""
    return max(1, int(round(duration_s * fps)))


@dataclass
class PreparedFace:
    crop: np.ndarray  # uint8 (S,S,3) RGB: the aligned square portrait (EAT's framing rule), S = engine size
    landmarks: np.ndarray  # float32 (68,2) x,y in crop pixel coordinates
    warnings: tuple[str, ...] = ()  # e.g. "2 faces found; using the largest"
    cache: dict[str, Any] = field(default_factory=dict)  # engine-specific per-photo data (latents, meshes)


class TalkingHead(Protocol):
    name: str  # "lite" | "eat"
    device: str

    def prepare(self, photo: np.ndarray) -> PreparedFace:
        """uint8 HxWx3 RGB photo -> PreparedFace. Raises NoFaceFound / FaceTooSmall / BadImage."""
        ...

    def frames(self, face: PreparedFace, speech: Audio, emotion: str, pose: PoseSequence,
               intensity: float = 1.0) -> Iterator[np.ndarray]:
        """Yields uint8 (B,S,S,3) batches; n_frames(speech.duration_s) frames in all."""
        ...
