"""Matting stage (`Matting`): the foreground alpha of portrait frames, and compositing them on a solid colour.
Backends (matting.backend): selfie.py (MediaPipe selfie segmentation, packaged, CPU) and modnet.py (MODNet ONNX, your
weights); "auto" takes MODNet when its file exists under weights_dir, else selfie; "none" = fully opaque.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from avatar.core.config import CHOICES, AvatarConfig
from avatar.core.errors import BackendUnavailable
from avatar.core.types import check_frames

from .base import AlphaSmoother, clean_edge, composite, with_face_prior

__all__ = ["Matting", "AlphaSmoother", "clean_edge", "composite", "with_face_prior"]

log = logging.getLogger("avatar")

BACKENDS = CHOICES["matting.backend"]


class Matting:
    """The matting stage: `Matting.load(cfg)`, then `alpha(frames)`, `composite(frames, alpha, colour)`, `clip(...)`.

    Backends: "selfie" (selfie.py) = MediaPipe selfie segmentation (packaged with mediapipe, offline, ~10 ms a frame
    on CPU), edges snapped to the image with a guided filter; "modnet" (modnet.py) = MODNet ONNX (user-supplied
    weights), chosen by "auto" when its file exists under weights_dir; "none" = fully opaque (no matting).

    For a clip, `clip()` keeps the matte temporally stable (an exponential moving average across frames) and its edge
    soft (a small feather). The lite engine does better still: it mattes the photo once and warps that matte with the
    frame (`LiteEngine.frames_with_alpha`), which avatar/render.py uses when the engine offers it.
    """

    def __init__(self, backend: str, segmenter=None, batch_size: int = 8, fallback_reason: str | None = None) -> None:
        self.backend = backend
        self.batch_size = max(1, batch_size)
        self.fallback_reason = fallback_reason
        self._segmenter = segmenter
        self._backgrounds: dict[tuple, np.ndarray] = {}

    @classmethod
    def load(cls, cfg: AvatarConfig) -> "Matting":
        backend = cfg.matting.backend
        if backend not in BACKENDS:
            raise BackendUnavailable(f"unknown matting backend {backend!r}; use one of: {', '.join(BACKENDS)}")
        if backend == "none":
            return cls("none")
        reason = None
        if backend in ("auto", "modnet"):
            modnet, reason = _load_modnet(cfg)
            if modnet is not None:
                return cls("modnet", modnet, cfg.matting.batch_size)
            if backend == "modnet":
                log.warning("matting: %s; falling back to selfie segmentation", reason)
        from .selfie import SelfieSegmenter

        return cls("selfie", SelfieSegmenter(), cfg.matting.batch_size, fallback_reason=reason)

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    def alpha(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (B,H,W,3) RGB -> float32 (B,H,W) alpha in [0,1] (1 = person), frame by frame (no smoothing)."""
        check_frames(frames)
        if not self.enabled:
            return np.ones(frames.shape[:3], np.float32)
        parts = [self._segmenter.alpha(frames[i:i + self.batch_size]) for i in range(0, len(frames), self.batch_size)]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def composite(self, frames: np.ndarray, alpha: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
        """frames * alpha + colour * (1 - alpha) -> uint8 (B,H,W,3)."""
        return composite(frames, alpha, colour, self._background(frames.shape[1:3], colour))

    def clip(self, batches: Iterable[np.ndarray], colour: tuple[int, int, int]) -> Iterator[np.ndarray]:
        """Composites a stream of frame batches with a temporally smoothed, feathered matte (constant memory)."""
        smoother = AlphaSmoother()
        for frames in batches:
            yield self.composite(frames, smoother(self.alpha(frames)), colour)

    def _background(self, shape: tuple[int, int], colour: tuple[int, int, int]) -> np.ndarray:
        key = (*shape, *colour)
        if key not in self._backgrounds:
            self._backgrounds = {key: np.full((*shape, 3), colour, np.uint8)}
        return self._backgrounds[key]


def _load_modnet(cfg: AvatarConfig):
    """(ModnetMatting or None, why not)."""
    path = cfg.weights_path(cfg.matting.modnet_path)
    if not Path(path).is_file():
        return None, f"MODNet weights not found at {path}"
    try:
        from .modnet import ModnetMatting
    except ImportError as e:
        log.info("matting: MODNet weights found but avatar.matting.modnet is unavailable (%s); using selfie segmentation", e)
        return None, f"MODNet runner unavailable: {e}"
    return ModnetMatting.load(path, cfg.matting.batch_size), None
