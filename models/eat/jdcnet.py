"""JDCNet (StarGANv2-VC F0 network); EAT uses only its convolutional feature trunk (get_feature_GAN).

The LSTMs, classifier and detector are defined so the checkpoint loads strictly; they never run here.
"""
from __future__ import annotations

import torch
from torch import nn


class JDCResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, slope: float = 0.01):
        super().__init__()
        self.downsample = cin != cout
        self.pre_conv = nn.Sequential(nn.BatchNorm2d(cin), nn.LeakyReLU(slope), nn.MaxPool2d(kernel_size=(1, 2)))
        self.conv = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                  nn.LeakyReLU(slope), nn.Conv2d(cout, cout, 3, padding=1, bias=False))
        self.conv1by1 = nn.Conv2d(cin, cout, 1, bias=False) if self.downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_conv(x)
        return self.conv(x) + (self.conv1by1(x) if self.downsample else x)


class JDCNet(nn.Module):
    def __init__(self, num_class: int = 1, slope: float = 0.01):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(1, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64),
                                        nn.LeakyReLU(slope), nn.Conv2d(64, 64, 3, padding=1, bias=False))
        self.res_block1 = JDCResBlock(64, 128)
        self.res_block2 = JDCResBlock(128, 192)
        self.res_block3 = JDCResBlock(192, 256)
        self.pool_block = nn.Sequential(nn.BatchNorm2d(256), nn.LeakyReLU(slope))
        self.detector_conv = nn.Sequential(nn.Conv2d(640, 256, 1, bias=False), nn.BatchNorm2d(256))
        self.bilstm_classifier = nn.LSTM(input_size=512, hidden_size=256, batch_first=True, bidirectional=True)
        self.bilstm_detector = nn.LSTM(input_size=512, hidden_size=256, batch_first=True, bidirectional=True)
        self.classifier = nn.Linear(512, num_class)
        self.detector = nn.Linear(512, 2)

    def get_feature_GAN(self, mel: torch.Tensor) -> torch.Tensor:  # noqa: N802 (official name)
        """mel (B,1,80,T) -> (B,256,10,T). Always float32, like the official `.float()` cast."""
        with torch.autocast(device_type=mel.device.type, enabled=False):
            x = mel.float().transpose(-1, -2)
            x = self.res_block3(self.res_block2(self.res_block1(self.conv_block(x))))
            return self.pool_block(x).transpose(-1, -2)
