"""MODNet portrait matting (trimap-free): a MobileNetV2 encoder, a low-resolution semantic branch, a
high-resolution detail branch and a fusion branch that outputs the alpha matte. Written from the paper's /
official repository's description; parameter names follow the official `MODNet` module so its checkpoints load.

Tensors: input (B,3,H,W) RGB in [-1,1] ((rgb - 127.5) / 127.5), H and W multiples of 32; output (B,1,H,W) alpha.
Only the inference path is built (the training-only heads' parameters exist so checkpoints load strictly).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class MODNetConfig:
    in_channels: int = 3
    hr_channels: int = 32  # width of the high-resolution branch
    expansion: int = 6  # MobileNetV2 inverted-residual expansion


ENC_CHANNELS = (16, 24, 32, 96, 1280)  # MobileNetV2 features at strides 2, 4, 8, 16, 32
# inverted-residual stages: (expansion multiplier or 1, out channels, repeats, first stride)
MBV2_STAGES = ((1, 16, 1, 1), (None, 24, 2, 2), (None, 32, 3, 2), (None, 64, 4, 2), (None, 96, 3, 1),
               (None, 160, 3, 2), (None, 320, 1, 1))
STAGE_ENDS = (2, 4, 7, 14, 19)  # features[:end] gives the stride 2, 4, 8, 16, 32 outputs


def _up(x: Tensor, factor: float) -> Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def _conv_bn_relu6(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU6(inplace=True)]


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int):
        super().__init__()
        hidden = round(c_in * expansion)
        self.residual = stride == 1 and c_in == c_out
        layers = [] if expansion == 1 else _conv_bn_relu6(c_in, hidden, 1)
        layers += _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden)
        layers += [nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, in_channels: int, expansion: int):
        super().__init__()
        features: list[nn.Module] = [nn.Sequential(*_conv_bn_relu6(in_channels, 32, 3, 2))]
        c_in = 32
        for t, c, n, s in MBV2_STAGES:
            for i in range(n):
                features.append(InvertedResidual(c_in, c, s if i == 0 else 1, t or expansion))
                c_in = c
        features.append(nn.Sequential(*_conv_bn_relu6(c_in, ENC_CHANNELS[-1], 1)))
        self.features = nn.Sequential(*features)


class Backbone(nn.Module):
    def __init__(self, cfg: MODNetConfig):
        super().__init__()
        self.model = MobileNetV2(cfg.in_channels, cfg.expansion)

    def forward(self, x: Tensor) -> list[Tensor]:
        outs, start = [], 0
        for end in STAGE_ENDS:
            for layer in self.model.features[start:end]:
                x = layer(x)
            outs.append(x)
            start = end
        return outs


class IBNorm(nn.Module):
    """BatchNorm on the first half of the channels, InstanceNorm (no affine) on the rest."""

    def __init__(self, channels: int):
        super().__init__()
        self.n_bn = channels // 2
        self.bnorm = nn.BatchNorm2d(self.n_bn)
        self.inorm = nn.InstanceNorm2d(channels - self.n_bn, affine=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.bnorm(x[:, :self.n_bn]), self.inorm(x[:, self.n_bn:])], dim=1)


def cat_padded(parts: list[Tensor], multiple: int) -> Tensor:
    """torch.cat(parts, dim=1) with zero channels appended up to a multiple of `multiple`."""
    pad = -sum(p.shape[1] for p in parts) % multiple
    if pad:
        first = parts[0]
        fmt = torch.channels_last if first.is_contiguous(memory_format=torch.channels_last) and not \
            first.is_contiguous() else torch.contiguous_format
        parts = parts + [first.new_zeros(first.shape[0], pad, *first.shape[2:]).contiguous(memory_format=fmt)]
    return torch.cat(parts, dim=1)


class ConvIBNormRelu(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, padding: int = 0, norm_relu: bool = True):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride, padding, bias=True)]
        if norm_relu:
            layers += [IBNorm(c_out), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def forward_cat(self, parts: list[Tensor], multiple: int = 1) -> Tensor:
        """self(torch.cat(parts, 1)); with multiple > 1 the concatenation gets zero channels up to a multiple of it
        and the conv zero input weights for them (same output): cuDNN pads an NHWC input whose channel count is not
        a multiple of 8 in a separate copy, and the 35- and 99-channel convs ran on slower kernels."""
        x = cat_padded(parts, multiple)
        conv = self.layers[0]
        weight = conv.weight
        if x.shape[1] != weight.shape[1]:
            weight = F.pad(weight, (0, 0, 0, 0, 0, x.shape[1] - weight.shape[1]))
        return self.layers[1:](F.conv2d(x, weight, conv.bias, conv.stride, conv.padding))


class SEBlock(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.fc(x.mean((2, 3)))[:, :, None, None]


class LRBranch(nn.Module):
    def __init__(self, backbone: Backbone):
        super().__init__()
        e = ENC_CHANNELS
        self.backbone = backbone
        self.se_block = SEBlock(e[4], reduction=4)
        self.conv_lr16x = ConvIBNormRelu(e[4], e[3], 5, padding=2)
        self.conv_lr8x = ConvIBNormRelu(e[3], e[2], 5, padding=2)
        self.conv_lr = ConvIBNormRelu(e[2], 1, 3, stride=2, padding=1, norm_relu=False)  # training head

    def forward(self, img: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        enc2x, enc4x, _, _, enc32x = self.backbone(img)
        lr16x = self.conv_lr16x(_up(self.se_block(enc32x), 2.0))
        return self.conv_lr8x(_up(lr16x, 2.0)), enc2x, enc4x


class HRBranch(nn.Module):
    def __init__(self, hr: int):
        super().__init__()
        e = ENC_CHANNELS
        self.tohr_enc2x = ConvIBNormRelu(e[0], hr, 1)
        self.conv_enc2x = ConvIBNormRelu(hr + 3, hr, 3, stride=2, padding=1)
        self.tohr_enc4x = ConvIBNormRelu(e[1], hr, 1)
        self.conv_enc4x = ConvIBNormRelu(2 * hr, 2 * hr, 3, padding=1)
        self.conv_hr4x = nn.Sequential(ConvIBNormRelu(3 * hr + 3, 2 * hr, 3, padding=1),
                                       ConvIBNormRelu(2 * hr, 2 * hr, 3, padding=1),
                                       ConvIBNormRelu(2 * hr, hr, 3, padding=1))
        self.conv_hr2x = nn.Sequential(ConvIBNormRelu(2 * hr, 2 * hr, 3, padding=1),
                                       ConvIBNormRelu(2 * hr, hr, 3, padding=1),
                                       ConvIBNormRelu(hr, hr, 3, padding=1), ConvIBNormRelu(hr, hr, 3, padding=1))
        self.conv_hr = nn.Sequential(ConvIBNormRelu(hr + 3, hr, 3, padding=1),  # training head
                                     ConvIBNormRelu(hr, 1, 1, norm_relu=False))
        self.cat_multiple = 1  # see MODNet.pad_concatenations

    def forward(self, img: Tensor, enc2x: Tensor, enc4x: Tensor, lr8x: Tensor) -> Tensor:
        m = self.cat_multiple
        enc2x = self.tohr_enc2x(enc2x)
        hr4x = self.conv_enc2x.forward_cat([_up(img, 0.5), enc2x], m)
        hr4x = self.conv_enc4x(torch.cat([hr4x, self.tohr_enc4x(enc4x)], dim=1))
        hr4x = self.conv_hr4x[1:](self.conv_hr4x[0].forward_cat([hr4x, _up(lr8x, 2.0), _up(img, 0.25)], m))
        return self.conv_hr2x(torch.cat([_up(hr4x, 2.0), enc2x], dim=1))


class FusionBranch(nn.Module):
    def __init__(self, hr: int):
        super().__init__()
        self.conv_lr4x = ConvIBNormRelu(ENC_CHANNELS[2], hr, 5, padding=2)
        self.conv_f2x = ConvIBNormRelu(2 * hr, hr, 3, padding=1)
        self.conv_f = nn.Sequential(ConvIBNormRelu(hr + 3, hr // 2, 3, padding=1),
                                    ConvIBNormRelu(hr // 2, 1, 1, norm_relu=False))
        self.cat_multiple = 1  # see MODNet.pad_concatenations

    def forward(self, img: Tensor, lr8x: Tensor, hr2x: Tensor) -> Tensor:
        lr2x = _up(self.conv_lr4x(_up(lr8x, 2.0)), 2.0)
        f2x = self.conv_f2x(torch.cat([lr2x, hr2x], dim=1))
        fused = self.conv_f[0].forward_cat([_up(f2x, 2.0), img], self.cat_multiple)
        return torch.sigmoid(self.conv_f[1:](fused))


class MODNet(nn.Module):
    def __init__(self, cfg: MODNetConfig = MODNetConfig()):
        super().__init__()
        # registered twice, as in the official module, so its state_dict (both key prefixes) loads strictly
        self.backbone = Backbone(cfg)
        self.lr_branch = LRBranch(self.backbone)
        self.hr_branch = HRBranch(cfg.hr_channels)
        self.f_branch = FusionBranch(cfg.hr_channels)

    def pad_concatenations(self, multiple: int = 8) -> "MODNet":
        """Inference form for NHWC on a GPU: the concatenations with the image (35 and 99 channels) get zero channels
        up to a multiple of `multiple`, and their convs zero weights for them; the output is unchanged. 1 = off."""
        self.hr_branch.cat_multiple = self.f_branch.cat_multiple = multiple
        return self

    def forward(self, img: Tensor) -> Tensor:
        """(B,3,H,W) in [-1,1] -> alpha (B,1,H,W) in [0,1]."""
        lr8x, enc2x, enc4x = self.lr_branch(img)
        hr2x = self.hr_branch(img, enc2x, enc4x, lr8x)
        return self.f_branch(img, lr8x, hr2x)
