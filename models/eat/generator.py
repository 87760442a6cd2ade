"""OcclusionAwareSPADEGeneratorEam: warps the source feature volume to the driving keypoints and decodes a frame.

Split in two for batched rendering: `encode_source` (once per source image and emotion prompt) and
`render` (per batch of frames). `forward` = both, the official call.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .blocks import DownBlock2d, ResBlock3d, SameBlock2d, StyleModulation
from .dense_motion import DenseMotionConfig, DenseMotionNetwork, sample_shared_volume
from .spade import SPADEDecoder


@dataclass(frozen=True)
class GeneratorConfig:
    image_channel: int = 3
    feature_channel: int = 32
    num_kp: int = 15
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    reshape_channel: int = 32
    reshape_depth: int = 16  # 512 = 32 * 16
    num_resblocks: int = 6
    style_dim: int = 128  # emotion prompt size (EA3D module)
    dense_motion: DenseMotionConfig = field(default_factory=DenseMotionConfig)


class OcclusionAwareSPADEGeneratorEam(nn.Module):
    def __init__(self, cfg: GeneratorConfig = GeneratorConfig()):
        super().__init__()
        self.cfg = cfg
        self.dense_motion_network = DenseMotionNetwork(cfg.dense_motion)
        be = cfg.block_expansion
        self.first = SameBlock2d(cfg.image_channel, be, kernel_size=3, padding=1)
        blocks = []
        for i in range(cfg.num_down_blocks):
            blocks.append(DownBlock2d(min(cfg.max_features, be * 2 ** i), min(cfg.max_features, be * 2 ** (i + 1))))
        self.down_blocks = nn.ModuleList(blocks)
        self.second = nn.Conv2d(min(cfg.max_features, be * 2 ** cfg.num_down_blocks), cfg.max_features, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(cfg.num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(cfg.reshape_channel))
        out_features = be * 2 ** cfg.num_down_blocks
        self.third = SameBlock2d(cfg.max_features, out_features, kernel_size=3, padding=1, lrelu=True)
        self.fourth = nn.Conv2d(out_features, out_features, kernel_size=1)
        self.decoder = SPADEDecoder()
        self.ea3d = StyleModulation(cfg.style_dim, cfg.reshape_channel)

    def set_fast(self, fast: bool = True) -> None:
        """Inference forms that equal the official layers up to fp32 rounding: planar 3-D convs in the dense
        motion network, polyphase / fused SPADE layers in the decoder."""
        self.dense_motion_network.set_fast(fast)
        self.decoder.set_fast(fast)

    def encode_source(self, source_image: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """source (1,3,256,256) [0,1], prompt (1,128) -> emotion-modulated feature volume (1,32,16,64,64)."""
        dtype = self.second.weight.dtype
        out = self.first(source_image.to(dtype))
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        b, _, h, w = out.shape
        feature_3d = self.resblocks_3d(out.view(b, self.cfg.reshape_channel, self.cfg.reshape_depth, h, w))
        return self.ea3d(feature_3d, prompt.to(dtype))

    def render(self, feature_3d: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
               ) -> dict[str, torch.Tensor]:
        """feature_3d (1,32,16,64,64), kp_source (1,15,3), kp_driving (B,15,3) ->
        prediction (B,3,256,256) [0,1], mask, deformation, occlusion_map (float32)."""
        motion = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        warped = sample_shared_volume(feature_3d.float(), motion["deformation"]).to(feature_3d.dtype)
        b, c, d, h, w = warped.shape
        out = self.fourth(self.third(warped.reshape(b, c * d, h, w)))
        out = out * motion["occlusion_map"].to(out.dtype)  # occlusion map is 64x64 like `out`
        prediction = self.decoder(out)
        return {"prediction": prediction, **motion}

    def forward(self, source_image: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor,
                prompt: torch.Tensor) -> dict[str, torch.Tensor]:
        """Official call shape: one source, B driving keypoint sets; adds 'feature_3d' to render()'s dict."""
        feature_3d = self.encode_source(source_image, prompt)
        return {"feature_3d": feature_3d, **self.render(feature_3d, kp_source, kp_driving)}
