"""SPADE decoder of the EAT generator (256-ch 64x64 feature -> RGB 256x256), old hook-style spectral norm.

The official layers use torch.nn.utils.spectral_norm (keys weight_orig / weight_u / weight_v). In eval that
hook computes W = weight_orig / sigma with sigma = u . (W_mat v) from the STORED u, v (no power iteration);
SNConv2d reproduces exactly that, always in float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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


def _phase_offsets(phase: int, scale: int) -> list[int]:
    """Low-res row offsets that a 3-tap kernel at high-res row `phase` (mod scale) touches after nearest x scale."""
    return sorted({(phase + d) // scale for d in (-1, 0, 1)})


def _phase_matrix(phase: int, scale: int, offsets: list[int], like: torch.Tensor) -> torch.Tensor:
    """(len(offsets), 3) 0/1 matrix: high-res tap d (-1, 0, 1) -> low-res offset it reads."""
    m = torch.zeros(len(offsets), 3, dtype=like.dtype, device=like.device)
    for d in (-1, 0, 1):
        m[offsets.index((phase + d) // scale), d + 1] = 1
    return m


def upsampled_conv3x3(seg: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, scale: int) -> torch.Tensor:
    """conv2d(interpolate(seg, scale_factor=scale, nearest), weight, bias, padding=1) without the upsampling.

    Polyphase form: output pixel (s*i + p, s*j + q) only reads low-res rows/cols i + offsets(p) / j + offsets(q),
    so each phase is a 1x1, 1x2, 2x1 or 2x2 conv at low resolution with summed taps (9 -> 2.25 taps per output
    pixel at scale 4, 4 at scale 2). Same products, summed in another order (fp32 differences ~1e-7).
    """
    b, _, h, w = seg.shape
    cout = weight.shape[0]
    padded = F.pad(seg, (1, 1, 1, 1))
    fmt = channels_last_format(seg)
    out = torch.empty(b, cout, h * scale, w * scale, dtype=seg.dtype, device=seg.device, memory_format=fmt)
    groups: dict[tuple[tuple[int, ...], tuple[int, ...]], list[tuple[int, int]]] = {}
    for p in range(scale):
        for q in range(scale):
            groups.setdefault((tuple(_phase_offsets(p, scale)), tuple(_phase_offsets(q, scale))), []).append((p, q))
    for (oy, ox), phases in groups.items():
        kernels = [torch.einsum("ad,be,oide->oiab", _phase_matrix(p, scale, list(oy), weight),
                                _phase_matrix(q, scale, list(ox), weight), weight) for p, q in phases]
        inp = padded[:, :, 1 + oy[0]:1 + oy[0] + h + len(oy) - 1, 1 + ox[0]:1 + ox[0] + w + len(ox) - 1]
        res = F.conv2d(inp, torch.cat(kernels), bias.repeat(len(phases)))
        for i, (p, q) in enumerate(phases):
            out[:, :, p::scale, q::scale] = res[:, i * cout:(i + 1) * cout]
    return out


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
        actv = F.relu(upsampled_conv3x3(seg, conv.weight, conv.bias, scale))
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
        """Switch every SPADE layer to the polyphase / fused form (see SPADE)."""
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
