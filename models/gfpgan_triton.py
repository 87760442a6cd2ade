"""Triton kernel for GFPGAN's upsampling convs on CUDA (imported only where triton is installed).

Bilinear x2 then a 3x3 conv equals: mix the channels of each of the 9 kernel taps at low resolution (one 1x1 conv
with 9*Cout outputs: 4x fewer products than the polyphase conv, see `models.gfpgan.upsample_conv3x3`), then, per
output channel, add the 9 tap maps bilinearly upsampled and shifted by their tap offset. This kernel does the
second step for the 4 output phases of one low-res row at a time, separably (column taps, then row taps), with
the borders exact: clamped bilinear source (edge rows read twice), zero padding of the conv (the tap that falls
outside the image contributes nothing). Registered as the custom op `avatar::gfpgan_tap_sums` so torch.compile keeps
it as one kernel between the 1x1 conv and the epilogue inductor generates.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _column_phases(Z, row, cols_m, cols_0, cols_p, first_col, last_col, mask, c, C: tl.constexpr, A: tl.constexpr):
    """Kernel row tap A on one low-res row: output column phases 0 and 1, summed over the 3 column taps."""
    t0 = Z + row + (3 * A) * C + c[None, :]
    z0m = tl.load(t0 + cols_m, mask=mask, other=0.0).to(tl.float32)
    z00 = tl.load(t0 + cols_0, mask=mask, other=0.0).to(tl.float32)
    t1 = t0 + C
    z1m = tl.load(t1 + cols_m, mask=mask, other=0.0).to(tl.float32)
    z10 = tl.load(t1 + cols_0, mask=mask, other=0.0).to(tl.float32)
    z1p = tl.load(t1 + cols_p, mask=mask, other=0.0).to(tl.float32)
    t2 = t1 + C
    z20 = tl.load(t2 + cols_0, mask=mask, other=0.0).to(tl.float32)
    z2p = tl.load(t2 + cols_p, mask=mask, other=0.0).to(tl.float32)
    even = tl.where(first_col, 0.0, 0.75 * z0m + 0.25 * z00) + (0.25 * z1m + 0.75 * z10) + (0.75 * z20 + 0.25 * z2p)
    odd = (0.25 * z0m + 0.75 * z00) + (0.75 * z10 + 0.25 * z1p) + tl.where(last_col, 0.0, 0.25 * z20 + 0.75 * z2p)
    return even, odd


@triton.jit
def _tap_sums_kernel(Z, BIAS, Y, H, W, C: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_J: tl.constexpr,
                     BLOCK_C: tl.constexpr):
    """Z (B, H, W, 9*C) NHWC, channels ordered (row tap, column tap, c) -> Y (B, 2H, 2W, C) NHWC."""
    pid = tl.program_id(0)
    b = (pid // H).to(tl.int64)  # offsets pass 2**31 elements at big batches
    i = pid % H
    j = tl.program_id(1) * BLOCK_J + tl.arange(0, BLOCK_J)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (j < W)[:, None] & (c < C)[None, :]
    cols_m = (tl.maximum(j - 1, 0) * (9 * C))[:, None]  # clamped neighbours: the bilinear source at the edges
    cols_0 = (tl.minimum(j, W - 1) * (9 * C))[:, None]
    cols_p = (tl.minimum(j + 1, W - 1) * (9 * C))[:, None]
    first_col, last_col = (j == 0)[:, None], (j == W - 1)[:, None]
    row = W * (9 * C)
    image = b * H * row
    r_m, r_0, r_p = image + tl.maximum(i - 1, 0) * row, image + i * row, image + tl.minimum(i + 1, H - 1) * row
    first, last = i == 0, i == H - 1
    # kernel row tap 0 reads rows i-1, i; it falls outside the image above output row 0
    m0, m1 = _column_phases(Z, r_m, cols_m, cols_0, cols_p, first_col, last_col, mask, c, C, 0)
    o0, o1 = _column_phases(Z, r_0, cols_m, cols_0, cols_p, first_col, last_col, mask, c, C, 0)
    y00 = tl.where(first, 0.0, 0.75 * m0 + 0.25 * o0)
    y01 = tl.where(first, 0.0, 0.75 * m1 + 0.25 * o1)
    y10 = 0.25 * m0 + 0.75 * o0
    y11 = 0.25 * m1 + 0.75 * o1
    # tap 1 reads rows i-1, i, i+1
    m0, m1 = _column_phases(Z, r_m, cols_m, cols_0, cols_p, first_col, last_col, mask, c, C, 1)
    o0, o1 = _column_phases(Z, r_0, cols_m, cols_0, cols_p, first_col, last_col, mask, c, C, 1)
    p0, p1 = _column_phases(Z, r_p, cols_m, cols_0, cols_p, first_col, last_col, mask, c, C, 1)
    y00 += 0.25 * m0 + 0.75 * o0
    y01 += 0.25 * m1 + 0.75 * o1
    y10 += 0.75 * o0 + 0.25 * p0
    y11 += 0.75 * o1 + 0.25 * p1
    # tap 2 reads rows i, i+1; it falls outside the image below the last output row
    o0, o1 = _column_phases(Z, r_0, cols_m, cols_0, cols_p, first_col, last_col, mask, c, C, 2)
    p0, p1 = _column_phases(Z, r_p, cols_m, cols_0, cols_p, first_col, last_col, mask, c, C, 2)
    y00 += 0.75 * o0 + 0.25 * p0
    y01 += 0.75 * o1 + 0.25 * p1
    y10 += tl.where(last, 0.0, 0.25 * o0 + 0.75 * p0)
    y11 += tl.where(last, 0.0, 0.25 * o1 + 0.75 * p1)
    if HAS_BIAS:
        bias = tl.load(BIAS + c, mask=c < C, other=0.0).to(tl.float32)[None, :]
        y00, y01, y10, y11 = y00 + bias, y01 + bias, y10 + bias, y11 + bias
    out_row = 2 * W * C
    out = Y + b * (2 * H) * out_row + (2 * i) * out_row + (2 * j * C)[:, None] + c[None, :]
    kind = Y.dtype.element_ty
    tl.store(out, y00.to(kind), mask=mask)
    tl.store(out + C, y01.to(kind), mask=mask)
    tl.store(out + out_row, y10.to(kind), mask=mask)
    tl.store(out + out_row + C, y11.to(kind), mask=mask)


_tuned = triton.autotune(
    configs=[triton.Config({"BLOCK_J": bj, "BLOCK_C": bc}, num_warps=nw)
             for bj, bc, nw in ((16, 64, 4), (32, 64, 4), (8, 128, 4), (16, 128, 8), (32, 32, 4))],
    key=["H", "W", "C"])(_tap_sums_kernel)


@torch.library.custom_op("avatar::gfpgan_tap_sums", mutates_args=())
def tap_sums(z: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """z (B, 9*C, H, W) from the tap conv -> (B, C, 2H, 2W) channels_last; bias (C,), or empty for none."""
    b, c9, h, w = z.shape
    c = c9 // 9
    z = z.contiguous(memory_format=torch.channels_last)
    y = torch.empty(b, c, 2 * h, 2 * w, dtype=z.dtype, device=z.device, memory_format=torch.channels_last)
    has_bias = bias.numel() > 0
    args = (z, bias if has_bias else z, y, h, w)
    if z.is_cuda:
        grid = lambda meta: (b * h, triton.cdiv(w, meta["BLOCK_J"]), triton.cdiv(c, meta["BLOCK_C"]))  # noqa: E731
        with torch.cuda.device(z.device):  # triton launches on the current device and its stream, not z's
            _tuned[grid](*args, C=c, HAS_BIAS=has_bias)
    else:  # TRITON_INTERPRET=1 (checking the kernel on a CPU): no driver to autotune with
        _tap_sums_kernel[(b * h, triton.cdiv(w, 8), triton.cdiv(c, 16))](*args, C=c, HAS_BIAS=has_bias, BLOCK_J=8,
                                                                         BLOCK_C=16)
    return y


@tap_sums.register_fake
def _(z: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    b, c9, h, w = z.shape
    return z.new_empty(b, c9 // 9, 2 * h, 2 * w).contiguous(memory_format=torch.channels_last)
