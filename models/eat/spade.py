"""SPADE decoder of the EAT generator (256-ch 64x64 feature -> RGB 256x256), old hook-style spectral norm.

The official layers use torch.nn.utils.spectral_norm (keys weight_orig / weight_u / weight_v). In eval that
hook computes W = weight_orig / sigma with sigma = u . (W_mat v) from the STORED u, v (no power iteration);
SNConv2d reproduces exactly that, always in float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..triton_loader import load_cuda_kernel
from .blocks import channels_last_format


class SNConv2d(nn.Module):
    """Conv2d whose weight is weight_orig / (u . W_mat v), like the spectral_norm hook in eval mode."""

    def __init__(self, cin: int, cout: int, kernel_size: int, padding: int, bias: bool = True):
        super().__init__()
        self.weight_orig = nn.Parameter(torch.empty(cout, cin, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.register_buffer("weight_u", torch.zeros(cout))
        self.register_buffer("weight_v", torch.zeros(cin * kernel_size * kernel_size))
        self.padding = padding

    def normalized_weight(self) -> torch.Tensor:
        w = self.weight_orig.float()
        sigma = torch.dot(self.weight_u.float(), torch.mv(w.reshape(w.shape[0], -1), self.weight_v.float()))
        return (w / sigma).to(self.weight_orig.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.normalized_weight(), self.bias, padding=self.padding)


def _phase_window(phase: int, scale: int) -> tuple[int, tuple[tuple[int, int, int], ...]]:
    """The 2 low-res rows a 3-tap kernel at high-res row `phase` (mod scale >= 2) reads after nearest x scale: the
    first row's offset (-1 or 0) and, per window row, which taps (-1, 0, 1) land on it (a 2x3 0/1 matrix)."""
    start = (phase - 1) // scale
    rows = tuple(tuple(int((phase + d) // scale - start == r) for d in (-1, 0, 1)) for r in (0, 1))
    return start, rows


def _phase_tables(scale: int, device: torch.device) -> tuple[list[tuple[tuple[int, int, int], ...]], torch.Tensor,
                                                               torch.Tensor]:
    """Distinct phase windows (2x3 matrices) and, per phase, the window it uses and the row offset (0 or 1) into the
    2x2 conv's output (padding 1: output row i + 1 starts at low-res row i)."""
    windows = [_phase_window(p, scale) for p in range(scale)]
    unique = sorted({rows for _, rows in windows})
    group = torch.tensor([unique.index(rows) for _, rows in windows], dtype=torch.int32, device=device)
    offset = torch.tensor([start + 1 for start, _ in windows], dtype=torch.int32, device=device)
    return unique, group, offset


def _gather_torch(z: torch.Tensor, bias: torch.Tensor, offset: torch.Tensor, group: torch.Tensor, groups: int,
                  relu: bool) -> torch.Tensor:
    """The gather of upsampled_conv3x3 in torch ops (the CPU's form; the Triton kernel does it in one pass)."""
    scale, (h1, w1) = offset.numel(), z.shape[-2:]
    hi_rows, hi_cols = torch.arange(scale * (h1 - 1), device=z.device), torch.arange(scale * (w1 - 1), device=z.device)
    rows, cols = hi_rows // scale + offset[hi_rows % scale], hi_cols // scale + offset[hi_cols % scale]
    grouped = (z.permute(0, 2, 3, 1) + bias.repeat(groups * groups)).unflatten(3, (groups, groups, -1))
    out = grouped[:, rows[:, None], cols[None, :], group[hi_rows % scale][:, None], group[hi_cols % scale][None, :]]
    out = out.permute(0, 3, 1, 2)  # (B, C, H, W) over NHWC memory
    return F.relu(out) if relu else out


_GATHER_KERNEL = None  # models.eat.spade_triton.phase_gather once loaded (None where triton is missing)
_GATHER_KERNEL_TRIED = False


def gather_kernel():
    """The Triton gather (CUDA) or None where triton is not installed or a GPU is older than triton supports."""
    global _GATHER_KERNEL, _GATHER_KERNEL_TRIED
    if not _GATHER_KERNEL_TRIED and not torch.compiler.is_compiling():
        _GATHER_KERNEL_TRIED = True
        _GATHER_KERNEL = load_cuda_kernel("models.eat.spade_triton", "phase_gather")
    return _GATHER_KERNEL


def upsampled_conv3x3(seg: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, scale: int,
                      relu: bool = False) -> torch.Tensor:
    """conv2d(interpolate(seg, scale_factor=scale, nearest), weight, bias, padding=1) (then a ReLU if `relu`)
    without the upsampling.

    Polyphase form: after nearest x scale (>= 2), the 3 rows a tap window covers at high-res row s*i + p lie in
    the 2 low-res rows i + start(p), i + start(p) + 1, with the taps summed per low-res row. The phases have only
    3 distinct row windows (2 at scale 2), so ONE 2x2 conv at low resolution computes every distinct (row window,
    column window) pair (9 * Cout outputs at scale 4, 4 * Cout at scale 2: 2.25-4x fewer products than the 3x3
    conv at high resolution), and ONE gather places them: phase (p, q) of low-res pixel (i, j) reads its pair's
    channels at (i + start(p) + 1, j + start(q) + 1) (a Triton kernel on CUDA). Same products, summed in another
    order (fp32 ~1e-7).
    """
    if scale == 1:
        out = F.conv2d(seg, weight, bias, padding=1)
        return F.relu(out) if relu else out
    rows, group, offset = _phase_tables(scale, seg.device)
    m = torch.tensor(rows, dtype=weight.dtype, device=weight.device)  # (U, 2, 3)
    u = len(rows)
    kernels = torch.einsum("ard,bce,oide->aboirc", m, m, weight).reshape(u * u * weight.shape[0], -1, 2, 2)
    fmt = channels_last_format(seg)
    z = F.conv2d(seg, kernels.contiguous(memory_format=fmt), None, padding=1)
    kernel = gather_kernel() if seg.is_cuda else None
    if kernel is not None:
        out = kernel(z, bias.to(z.dtype), offset, group, u, relu)
    else:
        out = _gather_torch(z, bias.to(z.dtype), offset, group, u, relu)
    return out if fmt == torch.channels_last else out.contiguous()


class SPADE(nn.Module):
    """instance_norm(x) * (1 + gamma(seg)) + beta(seg); seg is resized (nearest) to x's size.

    fast=True (inference): the shared conv runs in polyphase form on the low-res seg (no upsampled copy, 2.25-4x
    fewer MACs) and gamma/beta run as one conv; the result equals the official order up to fp32 rounding.
    """

    def __init__(self, norm_nc: int, label_nc: int, hidden: int = 128):
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)
        self.fast = False

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = F.instance_norm(x, eps=1e-5)
        if self.fast:
            return self._modulate_fast(normalized, seg, x.shape[-1] // seg.shape[-1])
        if seg.shape[2:] != x.shape[2:]:
            seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(seg)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)

    def _modulate_fast(self, normalized: torch.Tensor, seg: torch.Tensor, scale: int) -> torch.Tensor:
        conv = self.mlp_shared[0]
        actv = upsampled_conv3x3(seg, conv.weight, conv.bias, scale, relu=True)
        w = torch.cat([self.mlp_gamma.weight, self.mlp_beta.weight])
        gamma, beta = F.conv2d(actv, w, torch.cat([self.mlp_gamma.bias, self.mlp_beta.bias]), padding=1).chunk(2, 1)
        return normalized * (1 + gamma) + beta


class SPADEResnetBlock(nn.Module):
    def __init__(self, fin: int, fout: int, label_nc: int):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmid = min(fin, fout)
        self.conv_0 = SNConv2d(fin, fmid, 3, 1)
        self.conv_1 = SNConv2d(fmid, fout, 3, 1)
        if self.learned_shortcut:
            self.conv_s = SNConv2d(fin, fout, 1, 0, bias=False)
        self.norm_0 = SPADE(fin, label_nc)
        self.norm_1 = SPADE(fmid, label_nc)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx


class SPADEDecoder(nn.Module):
    def __init__(self, ic: int = 256, oc: int = 64, label_nc: int = 256, num_middle: int = 6):
        super().__init__()
        self.fc = nn.Conv2d(ic, 2 * ic, 3, padding=1)
        for i in range(num_middle):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(2 * ic, 2 * ic, label_nc))
        self.num_middle = num_middle
        self.up_0 = SPADEResnetBlock(2 * ic, ic, label_nc)
        self.up_1 = SPADEResnetBlock(ic, oc, label_nc)
        self.conv_img = nn.Conv2d(oc, 3, 3, padding=1)

    def set_fast(self, fast: bool = True) -> None:
        """Switch every SPADE layer to the polyphase / fused form (see SPADE). Loads the CUDA gather kernel now:
        torch.compile traces the forward, and a module imported while tracing would not be used."""
        if fast and any(p.is_cuda for p in self.parameters()):
            gather_kernel()
        for mod in self.modules():
            if isinstance(mod, SPADE):
                mod.fast = fast

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """feature (B,256,64,64) -> prediction (B,3,256,256) in [0,1] (sigmoid)."""
        seg = feature
        x = self.fc(feature)
        for i in range(self.num_middle):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(F.interpolate(x, scale_factor=2.0, mode="nearest"), seg)
        x = self.up_1(F.interpolate(x, scale_factor=2.0, mode="nearest"), seg)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))
