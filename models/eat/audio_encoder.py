"""StarGANv2-VC style mel AudioEncoder used by EAT's audio-to-keypoint transformer (style = emotion prompt)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import StyleModulation


class ResBlk(nn.Module):
    """GroupNorm(8) pre-activation residual block; optional (2, 1) average pooling of the mel axis."""

    def __init__(self, dim_in: int, dim_out: int, downsample: bool = False):
        super().__init__()
        self.downsample = downsample
        self.learned_sc = dim_in != dim_out
        self.conv1 = nn.Conv2d(dim_in, dim_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        self.norm1 = nn.GroupNorm(8, dim_in, affine=True)
        self.norm2 = nn.GroupNorm(8, dim_in, affine=True)
        if self.learned_sc:
            self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, (2, 1)) if self.downsample else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sc = self._pool(self.conv1x1(x) if self.learned_sc else x)
        r = self.conv1(F.leaky_relu(self.norm1(x), 0.2))
        r = self.conv2(F.leaky_relu(self.norm2(self._pool(r)), 0.2))
        return (sc + r) / math.sqrt(2)


class AdaIN(StyleModulation):
    """(1 + gamma) * instance_norm(x) + beta, gamma/beta = tanh(MLP(style)) (same keys: fc.0, fc.2)."""

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return super().forward(F.instance_norm(x, eps=1e-5), s)


class AdainResBlk(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.upsample = upsample
        self.learned_sc = dim_in != dim_out
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, 1, 1)
        self.norm1 = AdaIN(style_dim, dim_in)
        self.norm2 = AdaIN(style_dim, dim_out)
        if self.learned_sc:
            self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False)

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=(2.0, 1.0), mode="nearest") if self.upsample else x

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        r = self.conv1(self._up(F.leaky_relu(self.norm1(x, s), 0.2)))
        r = self.conv2(F.leaky_relu(self.norm2(r, s), 0.2))
        sc = self._up(x)
        if self.learned_sc:
            sc = self.conv1x1(sc)
        return (r + sc) / math.sqrt(2)


class AudioEncoder(nn.Module):
    """mel (B,1,80,T) + F0 features (B,256,10,T) + style (1,128) -> (B,64,80,T).

    Official construction: AudioEncoder(dim_in=64, style_dim=128, max_conv_dim=512, w_hpf=0, F0_channel=256).
    """

    def __init__(self, dim_in: int = 64, style_dim: int = 128, max_conv_dim: int = 512, f0_channel: int = 256,
                 repeat_num: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(1, dim_in, 3, 1, 1)
        self.encode = nn.ModuleList()
        self.decode = nn.ModuleList()
        dim_out = dim_in
        for _ in range(repeat_num):
            dim_out = min(dim_in * 2, max_conv_dim)
            self.encode.append(ResBlk(dim_in, dim_out, downsample=True))
            self.decode.insert(0, AdainResBlk(dim_out, dim_in, style_dim, upsample=True))
            dim_in = dim_out
        for _ in range(2):
            self.encode.append(ResBlk(dim_out, dim_out))
        f0_half = f0_channel // 2
        self.decode.insert(0, AdainResBlk(dim_out + f0_half, dim_out, style_dim))
        for _ in range(2):
            self.decode.insert(0, AdainResBlk(dim_out + f0_half, dim_out + f0_half, style_dim))
        self.F0_conv = nn.Sequential(ResBlk(f0_channel, f0_half))

    def forward(self, mel: torch.Tensor, style: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
        x = self.stem(mel)
        for block in self.encode:
            x = block(x)
        f0 = F.adaptive_avg_pool2d(self.F0_conv(f0.to(x.dtype)), [x.shape[-2], x.shape[-1]])
        x = torch.cat([x, f0], dim=1)
        for block in self.decode:
            x = block(x, style)
        return x
