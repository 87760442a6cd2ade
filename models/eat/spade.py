"""SPADE decoder of the EAT generator (256-ch 64x64 feature -> RGB 256x256), old hook-style spectral norm.

The official layers use torch.nn.utils.spectral_norm (keys weight_orig / weight_u / weight_v). In eval that
hook computes W = weight_orig / sigma with sigma = u . (W_mat v) from the STORED u, v (no power iteration);
SNConv2d reproduces exactly that, always in float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


class SPADE(nn.Module):
    """instance_norm(x) * (1 + gamma(seg)) + beta(seg); seg is resized (nearest) to x's size."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int = 128):
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = F.instance_norm(x, eps=1e-5)
        if seg.shape[2:] != x.shape[2:]:
            seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(seg)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


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

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """feature (B,256,64,64) -> prediction (B,3,256,256) in [0,1] (sigmoid)."""
        seg = feature
        x = self.fc(feature)
        for i in range(self.num_middle):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(F.interpolate(x, scale_factor=2.0, mode="nearest"), seg)
        x = self.up_1(F.interpolate(x, scale_factor=2.0, mode="nearest"), seg)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))
