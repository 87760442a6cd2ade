"""HEEstimator: head pose (66-bin yaw/pitch/roll logits), translation and expression of a face image."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ResBottleneck


@dataclass(frozen=True)
class HEEstimatorConfig:  # vox-256-spade.yaml he_estimator_params + common_params
    block_expansion: int = 64
    max_features: int = 2048
    num_bins: int = 66
    num_kp: int = 15
    image_channel: int = 3


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, affine=True)


class HEEstimator(nn.Module):
    def __init__(self, cfg: HEEstimatorConfig = HEEstimatorConfig()):
        super().__init__()
        be = cfg.block_expansion
        self.conv1 = nn.Conv2d(cfg.image_channel, be, kernel_size=7, padding=3, stride=2)
        self.norm1 = _bn(be)
        self.conv2 = nn.Conv2d(be, 256, kernel_size=1)
        self.norm2 = _bn(256)
        self.block1 = self._stack("b1_", 256, 3)
        self.conv3 = nn.Conv2d(256, 512, kernel_size=1)
        self.norm3 = _bn(512)
        self.block2 = ResBottleneck(512, stride=2)
        self.block3 = self._stack("b3_", 512, 3)
        self.conv4 = nn.Conv2d(512, 1024, kernel_size=1)
        self.norm4 = _bn(1024)
        self.block4 = ResBottleneck(1024, stride=2)
        self.block5 = self._stack("b5_", 1024, 5)
        self.conv5 = nn.Conv2d(1024, 2048, kernel_size=1)
        self.norm5 = _bn(2048)
        self.block6 = ResBottleneck(2048, stride=2)
        self.block7 = self._stack("b7_", 2048, 2)
        self.fc_roll = nn.Linear(2048, cfg.num_bins)
        self.fc_pitch = nn.Linear(2048, cfg.num_bins)
        self.fc_yaw = nn.Linear(2048, cfg.num_bins)
        self.fc_t = nn.Linear(2048, 3)
        self.fc_exp = nn.Linear(2048, 3 * cfg.num_kp)

    @staticmethod
    def _stack(prefix: str, features: int, n: int) -> nn.Sequential:
        seq = nn.Sequential()
        for i in range(n):
            seq.add_module(f"{prefix}{i}", ResBottleneck(features, stride=1))
        return seq

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """image (B,3,256,256) RGB [0,1] -> yaw/pitch/roll (B,66) logits, t (B,3), exp (B,45)."""
        out = F.max_pool2d(F.relu(self.norm1(self.conv1(image))), kernel_size=3, stride=2, padding=1)
        out = self.block1(F.relu(self.norm2(self.conv2(out))))
        out = self.block3(self.block2(F.relu(self.norm3(self.conv3(out)))))
        out = self.block5(self.block4(F.relu(self.norm4(self.conv4(out)))))
        out = self.block7(self.block6(F.relu(self.norm5(self.conv5(out)))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        # The official layer names are swapped (yaw comes from fc_roll); the trained weights depend on it.
        return {"yaw": self.fc_roll(out), "pitch": self.fc_pitch(out), "roll": self.fc_yaw(out),
                "t": self.fc_t(out), "exp": self.fc_exp(out)}
