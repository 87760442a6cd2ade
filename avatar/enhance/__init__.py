"""Face enhancement stage (`Enhancer`): GFPGAN v1.4 restores the faces of aligned crops, a photo or a video.
One backend, gfpgan.py, on an engine: torch, ONNX Runtime or TensorRT (engines/); enhance.engine "auto" takes
tensorrt > onnx > torch by the files present. Without GFPGAN's weights the stage is "off" (`fallback_reason`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from avatar.core.config import AvatarConfig
from avatar.core.devices import resolve_device
from avatar.core.errors import AudioTooLong, BackendUnavailable, NoFaceFound
from avatar.core.host_copy import host_batches
from avatar.core.types import ProgressFn, check_frames, check_rgb

from .base import FACE_SIZE, FivePointDetector, align_faces, paste_faces

if TYPE_CHECKING:
    import torch

    from models.gfpgan import GFPGANv1Clean

__all__ = ["Enhancer", "select_engine", "FACE_SIZE"]

log = logging.getLogger("avatar.enhance")


# ---------------------------------------------------------------------------------------------------- engines


def select_engine(cfg: AvatarConfig, device: str) -> tuple[str, str]:
    """(engine name, why) for EnhanceConfig.engine; "auto": tensorrt > onnx > torch by what exists and imports."""
    ec = cfg.enhance
    if ec.engine != "auto":
        return ec.engine, "set in the config"
    on_cuda = device.startswith("cuda")
    if on_cuda and cfg.weights_path(ec.tensorrt_path).is_file() and _importable("tensorrt"):
        return "tensorrt", "engine file found"
    if cfg.weights_path(ec.onnx_path).is_file() and _importable("onnxruntime"):
        from engines.gfpgan_onnx import available_providers

        # a CPU-only onnxruntime would be slower than torch on the GPU
        if not on_cuda or "CUDAExecutionProvider" in available_providers():
            return "onnx", "ONNX file found"
    return "torch", "default"


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ---------------------------------------------------------------------------------------------------- the stage
@dataclass
class Enhancer:
    """The face-enhancement stage. backend "off" means no weights (see fallback_reason); its methods then raise.

        enhancer = Enhancer.load(config)           # backend "gfpgan" or "off" (+ fallback_reason)
        enhancer.enhance_faces(crops)              # aligned crops uint8 (B,H,W,3) RGB -> uint8 (B,512,512,3)
        enhancer.enhance_image(photo)              # any photo: detect 5 points, align, enhance, paste back
        enhancer.enhance_video(path, out_path)     # the same per frame, streamed in batches

    Every engine is a callable (B,3,512,512) float tensor in [-1,1] -> raw output tensor (gfpgan.py: the torch
    network, or engines/ for ONNX Runtime and TensorRT); gfpgan.py also does the uint8 conversion and the 256 -> 512
    resize, and this class the batching, so the three engines share one `enhance_faces`. base.py finds, aligns and
    pastes back the faces of a photo. torch is imported only when GFPGAN's weights are there.
    """

    backend: str  # "gfpgan" | "off"
    engine: str = "none"  # torch | onnx | tensorrt
    device: str = "cpu"
    batch_size: int = 8
    max_faces: int = 8
    fallback_reason: str = ""
    runner: Any = None  # gfpgan.Runner
    _detector: FivePointDetector | None = None

    @classmethod
    def load(cls, cfg: AvatarConfig) -> "Enhancer":
        ec = cfg.enhance
        if ec.backend == "off":
            return cls("off", fallback_reason="face enhancement is off in the config")
        if ec.backend not in ("auto", "gfpgan"):
            raise BackendUnavailable(f"unknown enhance backend {ec.backend!r}: use auto, gfpgan or off")
        device = resolve_device(cfg.device)
        engine, why = select_engine(cfg, device)
        weights = {"torch": ec.gfpgan_path, "onnx": ec.onnx_path, "tensorrt": ec.tensorrt_path}.get(engine, "")
        if not cfg.weights_path(weights).is_file():
            reason = f"GFPGAN weights not found: {cfg.weights_path(weights)}"
            if ec.backend == "gfpgan":  # asked for by name: say so loudly, then run without it like other stages
                log.warning("face enhancement: %s; it stays off", reason)
            return cls("off", fallback_reason=reason)
        from .gfpgan import TorchRunner, make_runner

        runner, out_device = make_runner(engine, cfg, device)
        if isinstance(runner, TorchRunner):
            runner.warm_up()
        log.info("face enhancement: GFPGAN v1.4, engine %s (%s) on %s", engine, why,
                 getattr(runner, "device", out_device))
        return cls("gfpgan", engine, out_device, ec.batch_size, ec.max_faces, runner=runner)

    @classmethod
    def from_network(cls, net: GFPGANv1Clean, device: str = "cpu", dtype: torch.dtype | None = None,
                     batch_size: int = 8) -> "Enhancer":
        """An enhancer around an already built network (tests, benchmarks); dtype None = float32."""
        import torch

        from .gfpgan import TorchRunner

        dtype = torch.float32 if dtype is None else dtype
        return cls("gfpgan", "torch", device, batch_size, runner=TorchRunner(net, device, dtype, batch_size))

    def _require(self):
        if self.runner is None:
            raise BackendUnavailable(f"face enhancement is unavailable: {self.fallback_reason or 'not loaded'}")
        return self.runner

    def enhance_faces(self, faces: np.ndarray) -> np.ndarray:
        """Aligned face crops uint8 (B,H,W,3) RGB (256 or 512 px) -> enhanced uint8 (B,512,512,3)."""
        from .gfpgan import faces_to_input, output_to_faces

        runner = self._require()
        faces = check_frames(faces)
        out = list(host_batches(output_to_faces(runner(faces_to_input(faces[i:i + self.batch_size], self.device)))
                                for i in range(0, len(faces), self.batch_size)))  # batch i+1 queued while i copies
        return np.concatenate(out) if out else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)

    def detector(self) -> FivePointDetector:
        if self._detector is None:
            self._detector = FivePointDetector(self.max_faces)
        return self._detector

    def enhance_image(self, image: np.ndarray, points5: np.ndarray | None = None) -> np.ndarray:
        """A photo uint8 HxWx3 -> the same photo with its faces enhanced. points5 (K,5,2): skip detection."""
        image = check_rgb(image)
        if points5 is None:
            points5 = self.detector()(image)[: self.max_faces]
            if len(points5) == 0:
                raise NoFaceFound("no face found in the photo to enhance")
        crops, affines = align_faces(image, np.asarray(points5, np.float32).reshape(-1, 5, 2))
        return paste_faces(image, self.enhance_faces(crops), affines) if len(crops) else image.copy()

    def enhance_frames(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Streams uint8 (T,H,W,3) frame batches: the faces of a whole batch go through the network together."""
        self._require()
        detector = FivePointDetector(self.max_faces, video=True)
        try:
            for frames in batches:
                yield self._enhance_batch(check_frames(frames), detector)
        finally:
            detector.close()

    def _enhance_batch(self, frames: np.ndarray, detector: FivePointDetector) -> np.ndarray:
        aligned = [align_faces(f, detector(f)[: self.max_faces]) for f in frames]
        counts = [len(c) for c, _ in aligned]
        if not sum(counts):
            return frames.copy()
        enhanced = self.enhance_faces(np.concatenate([c for c, _ in aligned if len(c)]))
        out, start = frames.copy(), 0
        for i, ((_, affines), n) in enumerate(zip(aligned, counts)):
            if n:
                out[i] = paste_faces(frames[i], enhanced[start:start + n], affines)
            start += n
        return out

    def enhance_video(self, source: str | Path, out_path: str | Path, max_s: float | None = None,
                      progress: ProgressFn | None = None) -> Path:
        """A video file -> MP4 with every frame's faces enhanced (audio copied, re-encoded to AAC). max_s: raise
        AudioTooLong once more frames than that arrive (files without a duration header, e.g. recorded WebM).
        progress(fraction, text) after every enhanced batch (the fraction from the header's duration; None without
        one)."""
        from avatar.core import media

        info = media.probe(source, decode=False)  # codec and rates only: the file is decoded once below
        audio = media.load_audio(source, 44100) if info.audio_codec else None
        # frames come at the decoder's rate (tbr; the average "fps" of a variable-rate phone video differs): writing
        # them at that exact rate keeps the copied audio in sync (29.97 stays 30000/1001)
        rate = info.tbr or info.fps or 25.0
        frames = media.read_video(source, batch=self.batch_size)
        if max_s is not None:
            frames = _at_most(frames, int(max_s * rate) + 1, max_s)
        enhanced = self.enhance_frames(frames)
        if progress is not None:
            enhanced = _reported(enhanced, round(info.duration_s * rate) or None, progress)
        return media.write_video(out_path, enhanced, audio=audio, fps=media.frame_rate_text(rate))


def _reported(batches: Iterable[np.ndarray], total: int | None, progress: ProgressFn) -> Iterator[np.ndarray]:
    """Passes the batches on, calling progress(fraction or None, "enhanced k/N frames") after each."""
    done = 0
    for batch in batches:
        yield batch
        done += len(batch)
        if total:
            progress(min(done / total, 0.99), f"enhanced {done}/{max(done, total)} frames")  # total: from the header
        else:
            progress(None, f"enhanced {done} frames")


def _at_most(batches: Iterable[np.ndarray], max_frames: int, max_s: float) -> Iterator[np.ndarray]:
    seen = 0
    for batch in batches:
        seen += len(batch)
        if seen > max_frames:
            raise AudioTooLong(f"the video is longer than {max_s:g} s, the maximum")
        yield batch
