"""KPDetector: canonical 3-D keypoints of the source face (15 points in [-1, 1]^3)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DownBlock2d, UpBlock3d, make_coordinate_grid_3d


@dataclass(frozen=True)
class KPDetectorConfig:
    block_expansion: int = 32
    feature_channel: int = 32  # unused by the detector; part of the yaml's common_params
    num_kp: int = 15
    image_channel: int = 3
    max_features: int = 1024
    reshape_channel: int = 16384  # = 1024 * reshape_depth
    reshape_depth: int = 16
    num_blocks: int = 5
    temperature: float = 0.1  # heatmap softmax temperature
    scale_factor: float = 0.25  # input is anti-alias downsampled 256 -> 64 first


class KPHourglass(nn.Module):
    """2-D encoder, 1x1 conv, reshape to a (C, 16, h, w) volume, 3-D decoder."""

    def __init__(self, cfg: KPDetectorConfig):
        super().__init__()
        n, be, mf = cfg.num_blocks, cfg.block_expansion, cfg.max_features
        self.down_blocks = nn.Sequential()
        for i in range(n):
            cin = cfg.image_channel if i == 0 else min(mf, be * (2 ** i))
            self.down_blocks.add_module(f"down{i}", DownBlock2d(cin, min(mf, be * (2 ** (i + 1)))))
        self.conv = nn.Conv2d(min(mf, be * (2 ** n)), cfg.reshape_channel, kernel_size=1)
        self.up_blocks = nn.Sequential()
        for i in range(n):
            cin = min(mf, be * (2 ** (n - i)))
            cout = min(mf, be * (2 ** (n - i - 1)))
            self.up_blocks.add_module(f"up{i}", UpBlock3d(cin, cout))
        self.out_filters = cout
        self.reshape_depth = cfg.reshape_depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.down_blocks(x))
        bs, c, h, w = out.shape
        out = out.view(bs, c // self.reshape_depth, self.reshape_depth, h, w)
        return self.up_blocks(out)


class KPDetector(nn.Module):
    def __init__(self, cfg: KPDetectorConfig = KPDetectorConfig()):
        super().__init__()
        self.cfg = cfg
        self.predictor = KPHourglass(cfg)
        self.kp = nn.Conv3d(self.predictor.out_filters, cfg.num_kp, kernel_size=3, padding=1)
        # Anti-alias Gaussian (13x13, sigma 1.5 for scale 0.25); a buffer in the checkpoint.
        sigma = (1 / cfg.scale_factor - 1) / 2
        ksize = 2 * round(sigma * 4) + 1
        self.down = _AntiAlias(cfg.image_channel, ksize, cfg.scale_factor)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """image (B,3,256,256) RGB [0,1] -> {'value': (B,15,3), 'prediction_map': (B,15,16,64,64) pre-softmax}."""
        x = self.down(image)
        prediction = self.kp(self.predictor(x))
        shape = prediction.shape
        heat = F.softmax(prediction.view(shape[0], shape[1], -1) / self.cfg.temperature, dim=2).view(*shape)
        grid = make_coordinate_grid_3d(shape[2], shape[3], shape[4], heat.dtype, heat.device)
        value = (heat.unsqueeze(-1) * grid.view(1, 1, *grid.shape)).sum(dim=(2, 3, 4))
        return {"value": value, "prediction_map": prediction}


class _AntiAlias(nn.Module):
    """Depthwise Gaussian blur (stored kernel 'weight') then stride-1/scale subsampling."""

    def __init__(self, channels: int, ksize: int, scale: float):
        super().__init__()
        self.register_buffer("weight", torch.zeros(channels, 1, ksize, ksize))
        self.ka = ksize // 2
        self.kb = self.ka - 1 if ksize % 2 == 0 else self.ka
        self.step = int(1 / scale)
        self.groups = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        out = F.conv2d(out, weight=self.weight, groups=self.groups)
        return out[:, :, :: self.step, :: self.step]
