"""What travels between a session and a render worker: plain data that pickles (numpy arrays, dataclasses)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from avatar.core.types import Audio, PoseSequence


def photo_key(image: np.ndarray) -> str:
    """Content hash of a photo: workers cache its prepared face under it."""
    return hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest()


@dataclass
class RemoteFace:
    """A photo a render worker has prepared (and checked): the session keeps the image, the worker its face."""

    image: np.ndarray  # uint8 HxWx3 RGB, as the user gave it (after the app's size limit)
    key: str
    warnings: tuple[str, ...] = ()


@dataclass
class RenderJob:
    """One clip for a render worker; the same arguments AvatarSystem.render gives render_clip in local mode."""

    face: RemoteFace
    speech: Audio
    emotion: str
    pose: str | PoseSequence
    background: tuple[int, int, int] | None = None
    size: int = 256
    enhance: bool = False
    intensity: float = 1.0
    start_frame: int = 0
    job_id: str = field(default="")
