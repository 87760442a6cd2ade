"""GFPGAN v1.4 backend: the network of models/gfpgan.py on torch (optionally compiled), or the ONNX Runtime /
TensorRT runners of engines/, behind one callable: (B,3,512,512) float tensor in [-1,1] -> output tensor."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from avatar.core.compiled import compiled
from avatar.core.config import AvatarConfig
from avatar.core.devices import resolve_dtype
from avatar.core.errors import BackendUnavailable, WeightsError
from models.gfpgan import V1_4, GFPGANConfig, GFPGANv1Clean

from .base import FACE_SIZE

log = logging.getLogger("avatar.enhance")


Runner = Callable[[torch.Tensor], torch.Tensor]


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
        self._fn = compiled(self.net, dynamic=False) if self.fixed_batch else self.net  # thread-safe (see there)

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
        with torch.inference_mode():
            x = x.to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
            if self.fixed_batch:  # made here, so warm-up and real calls show the compiled graph one dispatch key set
                x = x.clone(memory_format=torch.channels_last)  # (it guards on it: else a recompile, minutes)
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


def output_to_faces(y: torch.Tensor) -> torch.Tensor:
    """Raw network output (B,3,S,S) -> uint8 (B,S,S,3) on y's device, clamped to [-1,1] as the official
    post-processing (avatar.core.host_copy brings it to the host)."""
    u8 = ((y.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return u8.permute(0, 2, 3, 1).contiguous()


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
