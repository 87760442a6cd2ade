"""Audio2kpTransformerBBoxQDeepPrompt: per-frame expression PCA coefficients (32) from audio, pose and emotion.

Per frame r the inputs are 11-frame windows (r-5..r+5): mel (1,80,11), pose images (11,1,64,64),
DeepSpeech logits (11,16,29), plus the frame's head pose (66-bin logits + t). Frames are independent in eval,
so any batch size gives the official per-chunk results.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .audio_encoder import AudioEncoder
from .blocks import StyleModulation, down_res_stack
from .jdcnet import JDCNet
from .keypoints import headpose_token
from .transformer import PositionalEncoding, TransformerDeep


@dataclass(frozen=True)
class Audio2kpConfig:  # deepprompt yaml audio2kp_params, face_ea=True
    embedding_dim: int = 256  # only sizes the unused (but stored) `embedding` table
    num_kp: int = 15
    num_w: int = 5  # window half-width: 2 * 5 + 1 = 11 frames
    d_model: int = 128
    num_pca: int = 32  # expression PCA coefficients predicted


class Audio2kpTransformer(nn.Module):
    def __init__(self, cfg: Audio2kpConfig = Audio2kpConfig()):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(41, cfg.embedding_dim)  # unused at inference; stored in the checkpoint
        self.face_shrink = nn.Linear(cfg.num_kp * 16, 32)
        self.hp_extractor = nn.Linear(45, cfg.d_model)
        self.pos_enc = PositionalEncoding(cfg.d_model, 20)
        lrelu = nn.LeakyReLU(0.02)
        self.audio_embedding = nn.Sequential(
            nn.Conv1d(29, 32, 3, stride=2, padding=1), lrelu, nn.Conv1d(32, 32, 3, stride=2, padding=1), lrelu,
            nn.Conv1d(32, 64, 3, stride=2, padding=1), lrelu, nn.Conv1d(64, 64, 3, stride=2, padding=1), lrelu)
        self.encoder_fc1 = nn.Sequential(nn.Linear(192, 128), lrelu, nn.Linear(128, 128))
        self.audio_embedding2 = nn.Sequential(nn.Conv2d(1, 8, (3, 17), padding=(1, 0)), nn.BatchNorm2d(8), nn.ReLU(),
                                              nn.Conv2d(8, 32, (13, 13), padding=(6, 6)))
        self.audioencoder = AudioEncoder(dim_in=64, style_dim=128, max_conv_dim=512, f0_channel=256)
        self.fea = StyleModulation(128, 32)
        self.decodefeature_extract = down_res_stack([64, 32, 48, 64, 96, 128])
        self.feature_extract = down_res_stack([1, 32, 64, 128, 128, 128])
        self.transformer = TransformerDeep()
        self.kp = nn.Linear(cfg.d_model, cfg.num_pca)
        self.f0_model = JDCNet(num_class=1)

    def face_feature(self, prediction_map: torch.Tensor, emoprompt: torch.Tensor) -> torch.Tensor:
        """kp_detector prediction_map (1,15,16,64,64) + emoprompt (1,128) -> face feature map (1,32,64,64)."""
        k, d, h, w = prediction_map.shape[1:]
        face = self.face_shrink(prediction_map[0].reshape(k * d, h * w).transpose(0, 1))
        return self.fea(face.transpose(0, 1).reshape(1, -1, h, w), emoprompt)

    def encoder_tokens(self, pose: torch.Tensor, deep: torch.Tensor, hp: torch.Tensor) -> torch.Tensor:
        """pose (B,11,1,64,64), deep (B,11,16,29), hp (B,128) -> (B,12,128)."""
        b, s = deep.shape[:2]
        deep_feature = self.audio_embedding(deep.reshape(b * s, 16, 29).transpose(1, 2)).squeeze(-1)
        pose_feature = self.feature_extract(pose.reshape(b * s, 1, 64, 64)).reshape(b * s, 128)
        tokens = self.encoder_fc1(torch.cat([pose_feature, deep_feature], dim=1)).reshape(b, s, 128)
        return torch.cat([tokens, hp.unsqueeze(1)], dim=1)

    def decoder_tokens(self, mel: torch.Tensor, face: torch.Tensor, emoprompt: torch.Tensor, hp: torch.Tensor
                       ) -> torch.Tensor:
        """mel (B,1,80,11), face (1,32,64,64), emoprompt (1,128), hp (B,128) -> (B,12,128)."""
        b, s = mel.shape[0], mel.shape[-1]
        f0 = self.f0_model.get_feature_GAN(mel)
        audio = self.audioencoder(mel, emoprompt, f0)  # (B,64,80,11)
        audio = self.audio_embedding2(audio.permute(0, 3, 1, 2).reshape(b * s, 1, 64, 80))
        x = torch.cat([audio, face.expand(b * s, -1, -1, -1)], dim=1)
        tokens = self.decodefeature_extract(x).reshape(b, s, 128)
        return torch.cat([tokens, hp.unsqueeze(1)], dim=1)

    def forward(self, mel: torch.Tensor, pose: torch.Tensor, deep: torch.Tensor, headpose: dict[str, torch.Tensor],
                face: torch.Tensor, emoprompt: torch.Tensor, deepprompt: torch.Tensor) -> torch.Tensor:
        """Windows for B frames + headpose {'yaw','pitch','roll': (B,66), 't': (B,3)} -> emo (B,32) PCA coeffs.

        face = self.face_feature(...) (1,32,64,64); emoprompt (1,128); deepprompt (1,6,128).
        """
        hp = self.hp_extractor(headpose_token(headpose["yaw"], headpose["pitch"], headpose["roll"], headpose["t"]))
        src = self.encoder_tokens(pose, deep, hp)
        query = self.decoder_tokens(mel, face, emoprompt, hp)
        out = self.transformer(src, query, self.pos_enc(src.shape[1] + 1), deepprompt)
        return self.kp(out[self.cfg.num_w])
