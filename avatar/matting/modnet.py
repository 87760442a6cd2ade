"""MODNet matting backend: the official ONNX model through ONNX Runtime (CUDA when available, else CPU).

    matting = ModnetMatting.load("checkpoints/modnet/modnet_photographic_portrait_matting.onnx", batch_size=8)
    alpha = matting.alpha(frames)                    # uint8 (B,H,W,3) RGB -> float32 (B,H,W) in [0,1]
    out = composite(frames, alpha, (0, 255, 0))     # uint8 (B,H,W,3) on a solid colour

Pre/post-processing follow the official ONNX demo: (rgb - 127.5) / 127.5, the "reference size 512" rule with
INTER_AREA, and the alpha resized back with INTER_AREA.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from avatar.core.errors import BackendUnavailable, WeightsError
from avatar.core.types import check_frames

from .base import composite

REF_SIZE = 512  # the official demo's reference side
SIZE_MULTIPLE = 32  # the network downsamples 32x


def modnet_size(height: int, width: int, ref: int = REF_SIZE) -> tuple[int, int]:
    """(h, w) the network runs at: short side scaled to `ref` when the image is entirely smaller or entirely larger
    than ref (aspect kept, truncated to int), else unchanged; then each side floored to a multiple of 32."""
    h, w = height, width
    if max(h, w) < ref or min(h, w) > ref:
        if w >= h:
            h, w = ref, int(w / h * ref)
        else:
            h, w = int(h / w * ref), ref
    return h - h % SIZE_MULTIPLE, w - w % SIZE_MULTIPLE


def preprocess(frames: np.ndarray) -> np.ndarray:
    """uint8 (B,H,W,3) -> float32 (B,3,h,w) in [-1,1] at modnet_size (normalised first, as the official demo)."""
    h, w = modnet_size(*frames.shape[1:3])
    out = np.empty((len(frames), 3, h, w), np.float32)
    for i, frame in enumerate(frames):
        x = (frame.astype(np.float32) - 127.5) / 127.5
        out[i] = cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
    return out


def postprocess(matte: np.ndarray, height: int, width: int) -> np.ndarray:
    """(B,1,h,w) network alpha -> float32 (B,H,W) in [0,1] (INTER_AREA back to the frame size)."""
    out = np.empty((len(matte), height, width), np.float32)
    for i, m in enumerate(matte[:, 0]):
        out[i] = cv2.resize(m.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    return np.clip(out, 0.0, 1.0, out=out)


class ModnetMatting:
    """One ONNX Runtime session of MODNet; frames are matted `batch_size` at a time."""

    backend = "modnet"

    def __init__(self, session, batch_size: int):
        self.session = session
        self.batch_size = max(1, batch_size)
        self.providers = session.get_providers()
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        fixed = session.get_inputs()[0].shape[0]
        if isinstance(fixed, int):  # an export without a dynamic batch axis
            self.batch_size = fixed

    @classmethod
    def load(cls, path: str | Path, batch_size: int = 8, device: str = "auto") -> "ModnetMatting":
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"MODNet ONNX model not found: {path}")
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailable("MODNet needs onnxruntime (pip install onnxruntime or onnxruntime-gpu)") from e
        providers = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            session = ort.InferenceSession(str(path), providers=providers)
        except Exception as e:  # onnxruntime raises its own types for corrupt / wrong files
            raise WeightsError(f"{path} is not a usable ONNX model ({type(e).__name__}: {e})") from None
        return cls(session, batch_size)

    def alpha(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (B,H,W,3) RGB frames of one size -> float32 alpha (B,H,W) in [0,1]."""
        frames = check_frames(frames)
        height, width = frames.shape[1:3]
        parts = []
        for i in range(0, len(frames), self.batch_size):
            x = preprocess(frames[i:i + self.batch_size])
            matte = self.session.run([self.output_name], {self.input_name: x})[0]
            parts.append(postprocess(matte, height, width))
        return np.concatenate(parts) if parts else np.zeros((0, height, width), np.float32)

    def composite(self, frames: np.ndarray, alpha: np.ndarray, rgb_colour: tuple[int, int, int]) -> np.ndarray:
        return composite(frames, alpha, rgb_colour)
