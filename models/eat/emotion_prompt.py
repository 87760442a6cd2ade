"""EmotionDeepPrompt: StarGAN-v2 mapping network -> emotion prompt (128) + 6 deep prompts (6x128)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class EmotionPromptConfig:
    latent_dim: int = 16  # z_trg size
    style_dim: int = 128
    num_domains: int = 8  # emotions, index order ang, con, dis, fea, hap, neu, sad, sur
    hidden_dim: int = 512
    num_prompts: int = 7  # 1 emotion prompt + 6 deep prompts


class MappingDeepNetwork(nn.Module):
    def __init__(self, cfg: EmotionPromptConfig):
        super().__init__()
        h = cfg.hidden_dim
        layers: list[nn.Module] = [nn.Linear(cfg.latent_dim, h), nn.ReLU()]
        for _ in range(3):
            layers += [nn.Linear(h, h), nn.ReLU()]
        self.shared = nn.Sequential(*layers)
        self.unshared = nn.ModuleList([
            nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                          nn.Linear(h, cfg.style_dim * cfg.num_prompts)) for _ in range(cfg.num_domains)])

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """z (B,16), y (B,) int64 domain -> (B, 896)."""
        h = self.shared(z)
        out = torch.stack([branch(h) for branch in self.unshared], dim=1)
        return out[torch.arange(y.shape[0], device=y.device), y]


class EmotionDeepPrompt(nn.Module):
    def __init__(self, cfg: EmotionPromptConfig = EmotionPromptConfig()):
        super().__init__()
        self.cfg = cfg
        self.mappingnet = MappingDeepNetwork(cfg)

    def forward(self, z_trg: torch.Tensor, y_trg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_trg (B,16), y_trg (B,) -> emoprompt (B,128), deepprompt (B,6,128)."""
        s = self.mappingnet(z_trg, y_trg).reshape(y_trg.shape[0], -1, self.cfg.style_dim)
        return s[:, 0, :], s[:, 1:, :]
