"""DenseMotionNetwork: per-frame 3-D deformation field, motion masks and occlusion map from keypoints.

Batching: the source feature volume is shared by all frames of a batch, so it is given once (1, C, D, H, W)
and sampled for every frame through one grid_sample call (frames stacked along the grid's depth axis),
which is element-for-element the official per-frame computation without repeating the volume.
Coordinates, Gaussians, the mask softmax and the deformation stay float32 whatever the weights' dtype:
a bf16 sampling grid would be off by up to 1/8 voxel.

fast=True (inference, see set_fast): the 7x7x7 mask conv and the 7x7 occlusion conv run as one planar 2-D conv
over the hourglass output's depth planes (blocks.planar_conv3d; 112 mask taps + 16 occlusion channels = 128
outputs), and so do the two full-resolution hourglass up-convs. Same products, other summation order.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import (Hourglass3d, channels_last_format, conv3d_from_planes, depth_planes, make_coordinate_grid_3d,
                     planar_tap_dtype, planar_weight)


@dataclass(frozen=True)
class DenseMotionConfig:
    block_expansion: int = 32
    max_features: int = 1024
    num_blocks: int = 5
    reshape_depth: int = 16
    compress: int = 4  # feature channels kept for the sparse warps
    num_kp: int = 15
    feature_channel: int = 32
    kp_variance: float = 0.01  # Gaussian heatmap variance


def sample_shared_volume(volume: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """volume (1,C,D,H,W), grids (K,D,H,W,3) in [-1,1] -> (K,C,D,H,W); trilinear, zeros, align_corners=False."""
    k, d, h, w, _ = grids.shape
    out = F.grid_sample(volume, grids.reshape(1, k * d, h, w, 3), mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.view(volume.shape[1], k, d, h, w).transpose(0, 1)


def keypoint_gaussians(kp: torch.Tensor, grid: torch.Tensor, kp_variance: float) -> torch.Tensor:
    """kp (B,K,3), grid (D,H,W,3) -> (B,K,D,H,W) unnormalised Gaussians."""
    diff = grid.unsqueeze(0).unsqueeze(0) - kp.view(kp.shape[0], kp.shape[1], 1, 1, 1, 3)
    return torch.exp(-0.5 * (diff ** 2).sum(-1) / kp_variance)


class DenseMotionNetwork(nn.Module):
    def __init__(self, cfg: DenseMotionConfig = DenseMotionConfig()):
        super().__init__()
        self.cfg = cfg
        k1 = cfg.num_kp + 1
        self.hourglass = Hourglass3d(cfg.block_expansion, k1 * (cfg.compress + 1), cfg.num_blocks, cfg.max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, k1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(cfg.feature_channel, cfg.compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(cfg.compress, affine=True)
        self.occlusion = nn.Conv2d(self.hourglass.out_filters * cfg.reshape_depth, 1, kernel_size=7, padding=3)
        self.fast = False

    def set_fast(self, fast: bool = True) -> None:
        """Planar form of the mask/occlusion convs and of the up-convs at 1/1 and 1/2 resolution (see module doc).
        The lower-resolution convs stay 3-D: there cuDNN's 3-D kernels are as fast or faster."""
        self.fast = fast
        for block in self.hourglass.decoder.up_blocks[-2:]:
            block.planar = fast

    def mask_and_occlusion(self, prediction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hourglass output (B,C,D,H,W) -> mask logits (B,K+1,D,H,W), occlusion logits (B,1,H,W) (float32 when
        fast, else the weights' dtype)."""
        b, c, d, h, w = prediction.shape
        if not self.fast:
            return self.mask(prediction), self.occlusion(prediction.reshape(b, c * d, h, w))
        k, n_mask = self.mask.kernel_size[0], self.mask.out_channels
        # occlusion input channel c*D + d belongs to plane d: one output channel per plane, summed on the diagonal
        occ_w = self.occlusion.weight.reshape(c, d, k, k).transpose(0, 1)  # both convs are 7x7 (same padding)
        w_mask = planar_weight(self.mask.weight)
        weight = torch.cat([w_mask, occ_w]).contiguous(memory_format=channels_last_format(w_mask))
        tap = planar_tap_dtype(prediction.dtype)
        y = F.conv2d(depth_planes(prediction).to(tap), weight.to(tap), None, padding=k // 2)
        mask = conv3d_from_planes(y[:, :k * n_mask], b, k, self.mask.bias)  # float32, like the softmax
        occ = torch.diagonal(y[:, k * n_mask:].unflatten(0, (b, d)), dim1=1, dim2=2).float().sum(-1)
        return mask, occ.unsqueeze(1) + self.occlusion.bias.float().view(1, 1, 1, 1)

    def sparse_motions(self, grid: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
        """(B, K+1, D, H, W, 3): identity for the background, then grid - kp_driving_k + kp_source_k."""
        b, k = kp_driving.shape[:2]
        ident = grid.unsqueeze(0).unsqueeze(0)
        to_source = (ident - kp_driving.view(b, k, 1, 1, 1, 3)) + kp_source.view(-1, k, 1, 1, 1, 3)
        return torch.cat([ident.expand(b, 1, *grid.shape), to_source], dim=1)

    def forward(self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        """feature (1,32,16,64,64) source volume; kp_driving (B,15,3); kp_source (1,15,3), float32.

        Returns mask (B,16,16,64,64), deformation (B,16,64,64,3), occlusion_map (B,1,64,64), all float32.
        """
        b = kp_driving.shape[0]
        _, _, d, h, w = feature.shape
        feat = F.relu(self.norm(self.compress(feature))).float()
        grid = make_coordinate_grid_3d(d, h, w, torch.float32, feature.device)
        motions = self.sparse_motions(grid, kp_driving.float(), kp_source.float())
        deformed = sample_shared_volume(feat, motions.reshape(-1, d, h, w, 3)).view(b, -1, feat.shape[1], d, h, w)
        heat = keypoint_gaussians(kp_driving.float(), grid, self.cfg.kp_variance) \
            - keypoint_gaussians(kp_source.float(), grid, self.cfg.kp_variance)
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1).unsqueeze(2)
        x = torch.cat([heat, deformed], dim=2).view(b, -1, d, h, w)
        prediction = self.hourglass(x.to(self.mask.weight.dtype))
        mask_logits, occlusion_logits = self.mask_and_occlusion(prediction)
        mask = F.softmax(mask_logits.float(), dim=1)
        deformation = (motions.permute(0, 1, 5, 2, 3, 4) * mask.unsqueeze(2)).sum(dim=1).permute(0, 2, 3, 4, 1)
        occlusion = torch.sigmoid(occlusion_logits.float())
        return {"mask": mask, "deformation": deformation, "occlusion_map": occlusion}
