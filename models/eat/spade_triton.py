"""Triton kernel for the SPADE decoder's polyphase convs on CUDA (imported only where triton is installed).

`models.eat.spade.upsampled_conv3x3` computes every distinct (row window, column window) pair of the nearest-x-scale
upsampled 3x3 conv as one 2x2 conv at low resolution; this kernel places the pairs at high resolution: output pixel
(s*i + p, s*j + q) is channel group (u(p), u(q)) of the low-res result at (i + r(p), j + r(q)), plus the bias,
optionally through a ReLU. One pass that reads and writes whole NHWC channel rows (inductor's gather for the same
indexing ran at ~0.7 TB/s on an H200). Registered as the custom op `avatar::spade_phase_gather` so torch.compile
keeps it as one kernel between the conv and the SPADE modulation.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _phase_gather_kernel(Z, BIAS, ROW, GROUP, Y, HS, WS, W1, SCALE: tl.constexpr, U: tl.constexpr, C: tl.constexpr,
                         RELU: tl.constexpr, BLOCK_X: tl.constexpr, BLOCK_C: tl.constexpr):
    """Z (B, h+1, w+1, U*U*C) NHWC -> Y (B, HS, WS, C) NHWC, HS = SCALE*h; ROW / GROUP (SCALE,) int32 per phase."""
    pid = tl.program_id(0)
    b = (pid // HS).to(tl.int64)  # offsets pass 2**31 elements from batch ~256 (2**23 per 256 px frame)
    y = pid % HS
    x = tl.program_id(1) * BLOCK_X + tl.arange(0, BLOCK_X)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (x < WS)[:, None] & (c < C)[None, :]
    p = y % SCALE
    src_row = y // SCALE + tl.load(ROW + p)
    row_group = tl.load(GROUP + p)
    q = x % SCALE
    src_col = x // SCALE + tl.load(ROW + q, mask=x < WS, other=0)
    col_group = tl.load(GROUP + q, mask=x < WS, other=0)
    channel = ((row_group * U + col_group) * C)[:, None] + c[None, :]
    src = Z + ((b * (HS // SCALE + 1) + src_row) * W1 + src_col)[:, None] * (U * U * C) + channel
    v = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    v += tl.load(BIAS + c, mask=c < C, other=0.0).to(tl.float32)[None, :]
    if RELU:
        v = tl.maximum(v, 0.0, propagate_nan=tl.PropagateNan.ALL)  # a NaN stays NaN, as with F.relu
    out = Y + ((b * HS + y) * WS + x)[:, None] * C + c[None, :]
    tl.store(out, v.to(Y.dtype.element_ty), mask=mask)


_tuned = triton.autotune(
    configs=[triton.Config({"BLOCK_X": bx, "BLOCK_C": bc}, num_warps=nw)
             for bx, bc, nw in ((32, 128, 4), (64, 64, 4), (16, 128, 4), (64, 128, 8), (128, 32, 4))],
    key=["HS", "WS", "C"])(_phase_gather_kernel)


@torch.library.custom_op("avatar::spade_phase_gather", mutates_args=())
def phase_gather(z: torch.Tensor, bias: torch.Tensor, row: torch.Tensor, group: torch.Tensor, groups: int,
                 relu: bool) -> torch.Tensor:
    """z (B, groups**2 * C, h+1, w+1) from the 2x2 conv -> (B, C, s*h, s*w) channels_last, s = len(row); bias (C,);
    row / group (s,) int32: per phase, the low-res row offset (0 or 1) and its window group."""
    b, cz, h1, w1 = z.shape
    s, c = row.numel(), cz // groups ** 2
    hs, ws = s * (h1 - 1), s * (w1 - 1)
    z = z.contiguous(memory_format=torch.channels_last)
    y = torch.empty(b, c, hs, ws, dtype=z.dtype, device=z.device, memory_format=torch.channels_last)
    args = (z, bias, row, group, y, hs, ws, w1)
    if z.is_cuda:
        grid = lambda meta: (b * hs, triton.cdiv(ws, meta["BLOCK_X"]), triton.cdiv(c, meta["BLOCK_C"]))  # noqa: E731
        with torch.cuda.device(z.device):  # triton launches on the current device and its stream, not z's
            _tuned[grid](*args, SCALE=s, U=groups, C=c, RELU=relu)
    else:  # TRITON_INTERPRET=1 (checking the kernel on a CPU): no driver to autotune with
        _phase_gather_kernel[(b * hs, triton.cdiv(ws, 8), triton.cdiv(c, 16))](
            *args, SCALE=s, U=groups, C=c, RELU=relu, BLOCK_X=8, BLOCK_C=16)
    return y


@phase_gather.register_fake
def _(z: torch.Tensor, bias: torch.Tensor, row: torch.Tensor, group: torch.Tensor, groups: int,
      relu: bool) -> torch.Tensor:
    b, cz, h1, w1 = z.shape
    s = row.numel()
    return z.new_empty(b, cz // groups ** 2, s * (h1 - 1), s * (w1 - 1)).contiguous(memory_format=torch.channels_last)
