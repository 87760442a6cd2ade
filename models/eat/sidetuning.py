"""EmotionalDeformationTransformer (EDN, "sidetuning"): emotion-dependent expression offset (45 = 15 kp x 3).

It sees only the face feature map and the prompts, so its output is the same for every frame of a clip.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import down_res_stack
from .transformer import PositionalEncoding, TransformerST


class EmotionalDeformationTransformer(nn.Module):
    def __init__(self, num_kp: int = 15, d_model: int = 128):
        super().__init__()
        self.pos_enc = PositionalEncoding(d_model, 20)
        self.transformer = TransformerST()
        self.emokp = nn.Linear(d_model, num_kp * 3)
        self.decodefeature_extract = down_res_stack([32, 32, 48, 64, 96, 128])

    def forward(self, face: torch.Tensor, emoprompt: torch.Tensor, deepprompt: torch.Tensor) -> torch.Tensor:
        """face (1,32,64,64) from Audio2kpTransformer.face_feature, emoprompt (1,128), deepprompt (1,6,128)
        -> (1,45) expression offset."""
        face_token = self.decodefeature_extract(face).reshape(face.shape[0], 1, -1)
        tokens = torch.cat([face_token, emoprompt.unsqueeze(1), deepprompt], dim=1)  # (1, 8, 128)
        out = self.transformer(tokens, self.pos_enc(tokens.shape[1]))[1:]
        return self.emokp(out.mean(dim=0))
