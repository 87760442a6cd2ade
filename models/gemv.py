"""Linear layers for one-token decoding: single-row calls go to the Triton matrix-vector kernels of
models/gemv_triton.py (CUDA with triton installed), everything else (prefill, CPU) to F.linear.

    swap_linears(model)               # fp16/bf16 weights, same numbers as F.linear up to summation order
    swap_linears(model, int8=True)    # int8 weights with one scale per output feature: half the bytes
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _kernels_ready(x: Tensor) -> bool:
    return x.is_cuda and x.numel() == x.shape[-1]  # one row: the matrix-vector case


class DecodeLinear(nn.Module):
    """Same parameters and results as the nn.Linear it replaces; faster for one row on CUDA."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias
        self._no_bias = linear.weight.new_empty(0)

    def forward(self, x: Tensor) -> Tensor:
        if _kernels_ready(x):
            from . import gemv_triton  # noqa: F401 - registers torch.ops.avatar.gemv

            bias = self.bias if self.bias is not None else self._no_bias
            return torch.ops.avatar.gemv(x, self.weight, bias)
        return F.linear(x, self.weight, self.bias)


class Int8Linear(nn.Module):
    """Weight-only int8: w ~= q * scale[:, None] with q in [-127, 127] per output feature (symmetric)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach()
        scale = w.abs().amax(dim=1).float().clamp_min(1e-12) / 127.0
        self.register_buffer("qweight", torch.round(w.float() / scale[:, None]).clamp_(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.bias = linear.bias
        self._no_bias = w.new_empty(0)

    def forward(self, x: Tensor) -> Tensor:
        if _kernels_ready(x):
            from . import gemv_triton  # noqa: F401 - registers torch.ops.avatar.gemv_int8

            bias = self.bias if self.bias is not None else self._no_bias
            return torch.ops.avatar.gemv_int8(x, self.qweight, self.scale, bias)
        return F.linear(x, (self.qweight.to(x.dtype) * self.scale[:, None].to(x.dtype)), self.bias)


def swap_linears(model: nn.Module, int8: bool = False) -> nn.Module:
    """Replaces every nn.Linear below model in place (int8: the fp weights are freed); returns model."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Linear):
            setattr(model, name, (Int8Linear if int8 else DecodeLinear)(child))
        else:
            swap_linears(child, int8)
    return model
