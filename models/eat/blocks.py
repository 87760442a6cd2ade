"""Building blocks shared by the EAT networks (first-order-motion / face-vid2vid family).

Module attribute names mirror the official checkpoints' state_dict keys, so they must not be renamed.
Every BatchNorm runs in eval mode with its running statistics (SynchronizedBatchNorm in the official code
behaves exactly like nn.BatchNorm in eval, eps 1e-5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_coordinate_grid_3d(d: int, h: int, w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(d, h, w, 3) grid of (x, y, z) in [-1, 1] (same arithmetic as the official make_coordinate_grid)."""
    x = torch.arange(w, dtype=dtype, device=device)
    y = torch.arange(h, dtype=dtype, device=device)
    z = torch.arange(d, dtype=dtype, device=device)
    x = 2 * (x / (w - 1)) - 1
    y = 2 * (y / (h - 1)) - 1
    z = 2 * (z / (d - 1)) - 1
    xx = x.view(1, 1, w).expand(d, h, w)
    yy = y.view(1, h, 1).expand(d, h, w)
    zz = z.view(d, 1, 1).expand(d, h, w)
    return torch.stack([xx, yy, zz], dim=3)


def channels_last_format(t: torch.Tensor) -> torch.memory_format:
    """The memory format t is in: channels_last(_3d) when it is NHWC / NDHWC (and not also plain contiguous)."""
    cl = torch.channels_last_3d if t.dim() == 5 else torch.channels_last
    return cl if t.dim() in (4, 5) and t.is_contiguous(memory_format=cl) and not t.is_contiguous() \
        else torch.contiguous_format


def depth_planes(x: torch.Tensor) -> torch.Tensor:
    """(B,C,D,H,W) -> (B*D,C,H,W): the depth planes as a batch of images (a view for channels_last_3d input)."""
    b, c, d, h, w = x.shape
    return x.transpose(1, 2).reshape(b * d, c, h, w)


def conv3d_from_planes(y: torch.Tensor, batch: int, k: int, bias: torch.Tensor | None) -> torch.Tensor:
    """Finish a stride-1, 'same' k x k x k Conv3d from the 2-D conv of its depth planes with the depth taps
    stacked as output channels (see planar_conv3d): y (B*D, k*Cout, H, W) -> float32 (B, Cout, D, H, W).

    out[:, :, d] = sum_t Y_t[d + t - k//2] (planes outside the volume are the zero padding) + bias, in float32."""
    y = y.unflatten(0, (batch, -1))  # (B, D, k*Cout, H, W)
    d = y.shape[1]
    y = y.unflatten(2, (k, -1))  # (B, D, k, Cout, H, W)
    p = k // 2
    out = y[:, :, p].float()
    if bias is not None:
        out = out + bias.float().view(1, 1, -1, 1, 1)
    for t in range(k):
        s = t - p
        if s > 0:
            out[:, :d - s] += y[:, s:, t]
        elif s < 0:
            out[:, -s:] += y[:, :d + s, t]
    return out.transpose(1, 2)


def planar_tap_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the planar conv's per-tap outputs (they are summed in float32 either way). bf16 rounds each of the
    k partial sums to 8 significant bits, fp16 to 11; the inputs are BatchNorm-ReLU activations, far inside fp16's
    range. Bf16 generator vs the fp32 parity frames on an H100 (emo0 / emo1): fp16 taps 36.7 / 36.7 dB, bf16 taps
    36.5 / 36.5 dB, the 3-D convs 36.7 / 36.3 dB (bf16 taps with a bf16 running sum: 35.0 dB, under the 35 bar)."""
    return torch.float16 if dtype == torch.bfloat16 else dtype


def planar_weight(weight: torch.Tensor) -> torch.Tensor:
    """Conv3d weight (Cout,Cin,k,k,k) -> 2-D weight (k*Cout,Cin,k,k), depth tap major; NHWC if it was NDHWC."""
    cout, cin, k = weight.shape[:3]
    w2 = weight.permute(2, 0, 1, 3, 4).reshape(k * cout, cin, k, k)
    nhwc = channels_last_format(weight) == torch.channels_last_3d
    return w2.contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)


def planar_conv3d(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """conv(x) for a k x k x k, stride-1, padding k//2 Conv3d, computed as ONE 2-D conv over the depth planes
    (the k depth taps as k*Cout output channels) and a shifted sum of the tap outputs; returns x's dtype.

    Same products as the 3-D conv, summed in another order. Why: cuDNN has no fast tensor-core kernel for a
    3-D conv with few output channels (the 7x7x7 112->16 motion-mask conv runs ~3.5x faster this way on an H100),
    while the planar 2-D conv is a wide, well-shaped GEMM."""
    k = conv.kernel_size[0]
    tap = planar_tap_dtype(x.dtype)
    y = F.conv2d(depth_planes(x).to(tap), planar_weight(conv.weight).to(tap), None, padding=k // 2)
    return conv3d_from_planes(y, x.shape[0], k, conv.bias).to(x.dtype)


class SameBlock2d(nn.Module):
    """conv -> BN -> ReLU (or LeakyReLU 0.01), resolution kept."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1,
                 lrelu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.conv(x))
        # nn.LeakyReLU() default slope in the official code
        return F.leaky_relu(out, 0.01) if self.lrelu else F.relu(out)


class DownBlock2d(nn.Module):
    """conv -> BN -> ReLU -> 2x2 average pool."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), kernel_size=2)


class DownBlock3d(nn.Module):
    """3-D conv -> BN -> ReLU -> (1, 2, 2) average pool (depth kept)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), kernel_size=(1, 2, 2))


class UpBlock3d(nn.Module):
    """nearest (1, 2, 2) upsampling -> 3-D conv -> BN -> ReLU. planar=True: the conv runs as planar_conv3d."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)
        self.planar = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        out = planar_conv3d(self.conv, out) if self.planar else self.conv(out)
        return F.relu(self.norm(out))


class ResBlock3d(nn.Module):
    """Pre-activation residual block (BN-ReLU-conv x2 + identity)."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(features, affine=True)
        self.norm2 = nn.BatchNorm3d(features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class ResBottleneck(nn.Module):
    """ResNet bottleneck (1x1 -> 3x3 (stride) -> 1x1), post-activation, BN after every conv."""

    def __init__(self, in_features: int, stride: int):
        super().__init__()
        mid = in_features // 4
        self.conv1 = nn.Conv2d(in_features, mid, kernel_size=1)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(mid, in_features, kernel_size=1)
        self.norm1 = nn.BatchNorm2d(mid, affine=True)
        self.norm2 = nn.BatchNorm2d(mid, affine=True)
        self.norm3 = nn.BatchNorm2d(in_features, affine=True)
        self.stride = stride
        if stride != 1:
            self.skip = nn.Conv2d(in_features, in_features, kernel_size=1, stride=stride)
            self.norm4 = nn.BatchNorm2d(in_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.stride != 1:
            x = self.norm4(self.skip(x))
        return F.relu(out + x)


class Hourglass3dEncoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            cin = in_features if i == 0 else min(max_features, block_expansion * (2 ** i))
            blocks.append(DownBlock3d(cin, min(max_features, block_expansion * (2 ** (i + 1)))))
        self.down_blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Hourglass3dDecoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            cin = (1 if i == num_blocks - 1 else 2) * min(max_features, block_expansion * (2 ** (i + 1)))
            blocks.append(UpBlock3d(cin, min(max_features, block_expansion * (2 ** i))))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        skips = list(skips)
        out = skips.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass3d(nn.Module):
    """U-Net over (C, D, H, W) volumes; output channels = block_expansion + in_features."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.encoder = Hourglass3dEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Hourglass3dDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class _NormActConv(nn.Module):
    """imaginaire Conv2dBlock with order 'NAC': BN -> (LeakyReLU 0.2) -> conv. Keys layers.norm / layers.conv."""

    def __init__(self, cin: int, cout: int, kernel_size: int, padding: int, activation: bool):
        super().__init__()
        self.layers = nn.ModuleDict({"norm": nn.BatchNorm2d(cin, affine=True),
                                     "conv": nn.Conv2d(cin, cout, kernel_size, padding=padding)})
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers["norm"](x)
        if self.activation:
            x = F.leaky_relu(x, 0.2)
        return self.layers["conv"](x)


class DownRes2dBlock(nn.Module):
    """imaginaire DownRes2dBlock, order 'NACNAC', batch norm, LeakyReLU 0.2, 2x2 average pooling.

    out = avgpool(conv_block_1(conv_block_0(x))) + avgpool(shortcut(x)); the learned shortcut (BN -> 1x1 conv,
    no activation) exists only when the channel count changes.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        hidden = min(cin, cout)
        self.conv_block_0 = _NormActConv(cin, hidden, 3, 1, activation=True)
        self.conv_block_1 = _NormActConv(hidden, cout, 3, 1, activation=True)
        self.learn_shortcut = cin != cout
        if self.learn_shortcut:
            self.conv_block_s = _NormActConv(cin, cout, 1, 0, activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx = F.avg_pool2d(self.conv_block_1(self.conv_block_0(x)), 2)
        skip = self.conv_block_s(x) if self.learn_shortcut else x
        return F.avg_pool2d(skip, 2) + dx


def down_res_stack(channels: list[int]) -> nn.Sequential:
    """DownRes2dBlocks through the channel list, then a final 2x2 average pool (keys 0..n-1, pool last)."""
    blocks: list[nn.Module] = [DownRes2dBlock(a, b) for a, b in zip(channels[:-1], channels[1:])]
    blocks.append(nn.AvgPool2d(2))
    return nn.Sequential(*blocks)


class StyleModulation(nn.Module):
    """EAT's emotion adaptation (EAModule / EA3DModule): x * (1 + gamma) + beta with gamma, beta = tanh(MLP(style)).

    Works for 4-D and 5-D x; style (B or 1, style_dim).
    """

    def __init__(self, style_dim: int, num_features: int):
        super().__init__()
        hidden = num_features * 2 // 16
        self.fc = nn.Sequential(nn.Linear(style_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_features * 2))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.fc(style))
        h = h.view(h.shape[0], h.shape[1], *([1] * (x.dim() - 2)))
        gamma, beta = torch.chunk(h, chunks=2, dim=1)
        return (1 + gamma) * x + beta
