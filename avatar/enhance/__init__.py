"""Face enhancement stage: GFPGAN v1.4 with a torch, ONNX Runtime or TensorRT engine.

    enhancer = Enhancer.load(config)           # backend "gfpgan" or "off" (+ fallback_reason)
    enhancer.enhance_faces(crops)              # aligned crops uint8 (B,H,W,3) RGB -> uint8 (B,512,512,3)
    enhancer.enhance_image(photo)              # any photo: detect 5 points, align, enhance, paste back
    enhancer.enhance_video(path, out_path)     # the same per frame, streamed in batches

Every engine is a callable (B,3,512,512) float tensor in [-1,1] -> raw output tensor; this module does the uint8
conversion, the 256 -> 512 resize and the batching, so the three engines share one `enhance_faces`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.gfpgan import V1_4, GFPGANConfig, GFPGANv1Clean

from .config import AvatarConfig
from .devices import resolve_device, resolve_dtype
from .errors import AudioTooLong, BackendUnavailable, NoFaceFound, WeightsError
from .types import check_frames, check_rgb

log = logging.getLogger("avatar.enhance")

FACE_SIZE = 512  # GFPGAN v1.4 works on 512x512 aligned crops
# 5 points (eye centres, nose tip, mouth corners; image left first) of the aligned 512 crop, as the official FFHQ
# alignment used for training
TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                         [201.26117, 371.41043], [313.08905, 371.15118]], np.float32)
BORDER_RGB = (135, 133, 132)  # fill outside the photo: the grey GFPGAN saw around training crops
FEATHER_MARGIN_PX, FEATHER_RAMP_PX = 8, 48  # paste-back mask in crop pixels: hard zero border, then a linear ramp

Runner = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------------- weights
def load_gfpgan_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict of an official GFPGAN checkpoint: {'params_ema': sd} (else {'params': sd}) or a bare sd."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"GFPGAN weights not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path} is not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict):
        raise WeightsError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    for key in ("params_ema", "params"):
        if key in ckpt:
            return ckpt[key]
    return ckpt


def build_gfpgan(state: dict[str, torch.Tensor], cfg: GFPGANConfig = V1_4) -> GFPGANv1Clean:
    """A CPU fp32 eval network with `state` loaded strictly; WeightsError lists missing/unexpected keys."""
    net = GFPGANv1Clean(cfg)
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        raise WeightsError("GFPGAN checkpoint does not match the v1.4 network: "
                           f"missing keys {missing or 'none'}; unexpected keys {unexpected or 'none'}"
                           + (f"; wrong shapes {wrong}" if wrong else ""))
    net.load_state_dict(state, strict=True)
    return net.eval()


# ---------------------------------------------------------------------------------------------------- engines
class TorchRunner:
    """The torch module on `device` in `dtype` (channels_last); optional torch.compile on CUDA (default mode: what
    the README's H100 figures used; max-autotune spent over 6 minutes tuning there and was not faster).
    With compile the batch is padded to `batch_size` so one compiled graph serves every call."""

    def __init__(self, net: GFPGANv1Clean, device: str, dtype: torch.dtype, batch_size: int, compile: bool = False):
        self.device, self.dtype, self.batch_size = device, dtype, batch_size
        if device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True  # fixed face size: let cuDNN pick the fastest conv kernels once
        self.net = _channels_last(net.to(device=device, dtype=dtype)).eval().bake(nhwc=True)  # inputs go NHWC
        self.fixed_batch = compile and device.startswith("cuda")
        self._fn = torch.compile(self.net, dynamic=False) if self.fixed_batch else self.net

    def warm_up(self) -> None:
        """Compile now (start-up) rather than in the first user request: one batch of blank faces."""
        if self.fixed_batch:
            t0 = time.perf_counter()
            log.info("compiling GFPGAN for batches of %d (torch.compile, one to two minutes) ...", self.batch_size)
            size = self.net.cfg.out_size
            try:
                self(torch.zeros(1, 3, size, size))
            except torch.cuda.OutOfMemoryError as e:
                raise BackendUnavailable(f"a GFPGAN batch of {self.batch_size} faces does not fit in GPU memory: "
                                         "lower [enhance] batch_size") from e
            log.info("GFPGAN compiled in %.0f s", time.perf_counter() - t0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if self.fixed_batch and n < self.batch_size:
            x = torch.cat([x, x[-1:].expand(self.batch_size - n, -1, -1, -1)])
        x = x.to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = self._fn(x)
        return out[:n] if self.fixed_batch else out


def _channels_last(net: torch.nn.Module) -> torch.nn.Module:
    """NHWC weights for cuDNN's fast fp16 kernels. The 5-D modulated weights (1,Cout,Cin,k,k) are re-strided so
    that weight[0], the 4-D tensor the batched conv uses, is channels_last."""
    for p in net.parameters():
        if p.ndim == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
        elif p.ndim == 5:
            p.data = p.data[0].contiguous(memory_format=torch.channels_last).unsqueeze(0)
    return net


def faces_to_input(faces: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """uint8 (B,H,W,3) RGB -> float32 (B,3,512,512) in [-1,1]; other sizes are resized (bilinear, as cv2.resize)."""
    x = torch.from_numpy(np.ascontiguousarray(faces)).to(device).permute(0, 3, 1, 2).float()
    if x.shape[-2:] != (FACE_SIZE, FACE_SIZE):
        shrink = x.shape[-1] > FACE_SIZE or x.shape[-2] > FACE_SIZE
        x = F.interpolate(x, size=(FACE_SIZE, FACE_SIZE), mode="bilinear", align_corners=False, antialias=shrink)
    return x / 127.5 - 1.0


def output_to_faces(y: torch.Tensor) -> np.ndarray:
    """Raw network output (B,3,S,S) -> uint8 (B,S,S,3), clamped to [-1,1] as the official post-processing."""
    u8 = ((y.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return u8.permute(0, 2, 3, 1).contiguous().cpu().numpy()


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


def make_runner(engine: str, cfg: AvatarConfig, device: str) -> tuple[Runner, str]:
    """(runner, the device its outputs live on)."""
    ec = cfg.enhance
    if engine == "tensorrt":
        from engines.gfpgan_tensorrt import GFPGANTensorRT

        runner = GFPGANTensorRT(cfg.weights_path(ec.tensorrt_path), device)
        return runner, str(runner.device)
    if engine == "onnx":
        from engines.gfpgan_onnx import GFPGANOnnx

        runner = GFPGANOnnx(cfg.weights_path(ec.onnx_path), device)
        # ONNX Runtime takes and returns host arrays (and moves them to the GPU itself with the CUDA provider):
        # pre/post-processing on the host avoids two extra trips over PCIe per batch
        return runner, "cpu"
    if engine != "torch":
        raise BackendUnavailable(f"unknown enhance engine {engine!r}: use auto, torch, onnx or tensorrt")
    net = build_gfpgan(load_gfpgan_state(cfg.weights_path(ec.gfpgan_path)))
    return TorchRunner(net, device, resolve_dtype(ec.dtype, device, gpu_default="float16"), ec.batch_size, ec.compile), device


# ---------------------------------------------------------------------------------------------------- 5 points
class FivePointDetector:
    """5 face points per face (eye centres, nose tip, mouth corners) from mediapipe's packaged face mesh.

    `video=True` lets mediapipe track faces between consecutive frames (faster); photos use fresh detection."""

    EYE_L, EYE_R, NOSE, MOUTH_L, MOUTH_R = (33, 133), (362, 263), 1, 61, 291  # mesh indices, image left first

    def __init__(self, max_faces: int = 8, video: bool = False, min_confidence: float = 0.5):
        try:
            import mediapipe as mp
        except ImportError as e:
            raise BackendUnavailable("face detection for enhancement needs mediapipe (pip install mediapipe)") from e
        self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=not video, max_num_faces=max_faces,
                                                     refine_landmarks=False, min_detection_confidence=min_confidence)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 RGB -> (K,5,2) float32 pixel points, largest face first (K may be 0)."""
        h, w = image.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(image))
        faces = []
        for lm in result.multi_face_landmarks or []:
            p = np.array([[q.x * w, q.y * h] for q in lm.landmark], np.float32)
            faces.append(np.stack([p[list(self.EYE_L)].mean(0), p[list(self.EYE_R)].mean(0), p[self.NOSE],
                                   p[self.MOUTH_L], p[self.MOUTH_R]]))
        faces.sort(key=lambda f: -np.linalg.norm(f[0] - f[1]))
        return np.stack(faces) if faces else np.zeros((0, 5, 2), np.float32)

    def close(self) -> None:
        self._mesh.close()


# ---------------------------------------------------------------------------------------------------- align / paste
def align_faces(image: np.ndarray, points5: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Photo + (K,5,2) points -> crops uint8 (K,512,512,3) and the (K,2,3) photo->crop affines."""
    crops, affines = [], []
    for pts in points5:
        m, _ = cv2.estimateAffinePartial2D(pts.astype(np.float32), TEMPLATE_512, method=cv2.LMEDS)
        if m is None:  # degenerate points (e.g. all equal): nothing sensible to align
            continue
        crops.append(cv2.warpAffine(image, m, (FACE_SIZE, FACE_SIZE), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_RGB))
        affines.append(m)
    if not crops:
        return np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8), np.zeros((0, 2, 3))
    return np.stack(crops), np.stack(affines)


def _feather_mask(size: int = FACE_SIZE) -> np.ndarray:
    """float32 (size,size): 0 at the crop border, rising linearly to 1 inside (soft seam after paste-back)."""
    r = np.arange(size, dtype=np.float32)
    edge = np.minimum(r, size - 1 - r)
    ramp = np.clip((edge - FEATHER_MARGIN_PX) / FEATHER_RAMP_PX, 0.0, 1.0)
    return np.minimum(ramp[:, None], ramp[None, :])


FEATHER_MASK = _feather_mask()


def paste_faces(image: np.ndarray, faces: np.ndarray, affines: np.ndarray) -> np.ndarray:
    """Warps each enhanced 512 crop back with the inverse affine and blends it in with the feathered mask.
    Only the face's bounding box is touched: pixels outside it are returned unchanged."""
    out = image.copy()
    h, w = image.shape[:2]
    corners = np.array([[0, 0, 1], [FACE_SIZE, 0, 1], [0, FACE_SIZE, 1], [FACE_SIZE, FACE_SIZE, 1]], np.float64)
    for face, m in zip(faces, affines):
        inv = cv2.invertAffineTransform(m)
        xy = corners @ inv.T
        x0, y0 = np.maximum(np.floor(xy.min(0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(xy.max(0)).astype(int) + 1, (w, h))
        if x1 <= x0 or y1 <= y0:
            continue
        local = inv.copy()
        local[:, 2] -= (x0, y0)
        size = (int(x1 - x0), int(y1 - y0))
        warped = cv2.warpAffine(face, local, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mask = cv2.warpAffine(FEATHER_MASK, local, size, flags=cv2.INTER_LINEAR, borderValue=0.0)[..., None]
        region = out[y0:y1, x0:x1].astype(np.float32)
        out[y0:y1, x0:x1] = np.clip(region + (warped.astype(np.float32) - region) * mask + 0.5, 0, 255).astype(np.uint8)
    return out


# ---------------------------------------------------------------------------------------------------- the stage
@dataclass
class Enhancer:
    """The face-enhancement stage. backend "off" means no weights (see fallback_reason); its methods then raise."""

    backend: str  # "gfpgan" | "off"
    engine: str = "none"  # torch | onnx | tensorrt
    device: str = "cpu"
    batch_size: int = 8
    max_faces: int = 8
    fallback_reason: str = ""
    runner: Runner | None = None
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
        runner, out_device = make_runner(engine, cfg, device)
        if isinstance(runner, TorchRunner):
            runner.warm_up()
        log.info("face enhancement: GFPGAN v1.4, engine %s (%s) on %s", engine, why,
                 getattr(runner, "device", out_device))
        return cls("gfpgan", engine, out_device, ec.batch_size, ec.max_faces, runner=runner)

    @classmethod
    def from_network(cls, net: GFPGANv1Clean, device: str = "cpu", dtype: torch.dtype = torch.float32,
                     batch_size: int = 8) -> "Enhancer":
        """An enhancer around an already built network (tests, benchmarks)."""
        return cls("gfpgan", "torch", device, batch_size, runner=TorchRunner(net, device, dtype, batch_size))

    def _require(self) -> Runner:
        if self.runner is None:
            raise BackendUnavailable(f"face enhancement is unavailable: {self.fallback_reason or 'not loaded'}")
        return self.runner

    def enhance_faces(self, faces: np.ndarray) -> np.ndarray:
        """Aligned face crops uint8 (B,H,W,3) RGB (256 or 512 px) -> enhanced uint8 (B,512,512,3)."""
        runner = self._require()
        faces = check_frames(faces)
        out = [output_to_faces(runner(faces_to_input(faces[i:i + self.batch_size], self.device)))
               for i in range(0, len(faces), self.batch_size)]
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

    def enhance_video(self, source: str | Path, out_path: str | Path, max_s: float | None = None) -> Path:
        """A video file -> MP4 with every frame's faces enhanced (audio copied, re-encoded to AAC). max_s: raise
        AudioTooLong once more frames than that arrive (files without a duration header, e.g. recorded WebM)."""
        from . import media

        info = media.probe(source, decode=False)  # codec and rates only: the file is decoded once below
        audio = media.load_audio(source, 44100) if info.audio_codec else None
        # frames come at the decoder's rate (tbr; the average "fps" of a variable-rate phone video differs): writing
        # them at that exact rate keeps the copied audio in sync (29.97 stays 30000/1001)
        rate = info.tbr or info.fps or 25.0
        frames = media.read_video(source, batch=self.batch_size)
        if max_s is not None:
            frames = _at_most(frames, int(max_s * rate) + 1, max_s)
        return media.write_video(out_path, self.enhance_frames(frames), audio=audio, fps=media.frame_rate_text(rate))


def _at_most(batches: Iterable[np.ndarray], max_frames: int, max_s: float) -> Iterator[np.ndarray]:
    seen = 0
    for batch in batches:
        seen += len(batch)
        if seen > max_frames:
            raise AudioTooLong(f"the video is longer than {max_s:g} s, the maximum")
        yield batch
