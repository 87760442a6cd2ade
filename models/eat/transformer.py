"""DETR-style post-norm transformer pieces used by EAT (sequence-first tensors (S, B, 128)).

"Deep prompt" variants: an extra last token carries the emotion prompt; after every layer but the last it is
replaced by the next of the 6 deep prompts. Positional encodings are added once at the input only (the
official layers receive `pos` but never use it).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn


def sinusoid_table(n_position: int, d_hid: int) -> torch.Tensor:
    """(1, n_position, d_hid) table: even dims sin, odd dims cos of p / 10000^(2*(j//2)/d)."""
    p = torch.arange(n_position, dtype=torch.float64)[:, None]
    j = torch.arange(d_hid)
    angle = p / torch.pow(torch.tensor(10000.0, dtype=torch.float64), (2 * (j // 2) / d_hid).double())[None, :]
    table = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float().unsqueeze(0)


class PositionalEncoding(nn.Module):
    def __init__(self, d_hid: int = 128, n_position: int = 20):
        super().__init__()
        self.register_buffer("pos_table", sinusoid_table(n_position, d_hid))

    def forward(self, length: int) -> torch.Tensor:
        return self.pos_table[:, :length]


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int = 128, nhead: int = 8, dim_feedforward: int = 1024):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src: torch.Tensor) -> torch.Tensor:
        src = self.norm1(src + self.self_attn(src, src, src, need_weights=False)[0])
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int = 128, nhead: int = 8, dim_feedforward: int = 1024):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        tgt = self.norm1(tgt + self.self_attn(tgt, tgt, tgt, need_weights=False)[0])
        tgt = self.norm2(tgt + self.multihead_attn(tgt, memory, memory, need_weights=False)[0])
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


def _prompt_token(deepprompt: torch.Tensor, idx: int, bs: int) -> torch.Tensor:
    """deepprompt (P, L, 128) -> token (1, P*bs, 128) for layer idx (each prompt row repeated bs times)."""
    tok = deepprompt[:, idx, :]
    return tok.unsqueeze(1).expand(tok.shape[0], bs, tok.shape[1]).reshape(-1, tok.shape[1]).unsqueeze(0)


class EncoderDeep(nn.Module):
    def __init__(self, num_layers: int = 6, **kw: int):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(**kw) for _ in range(num_layers)])

    def forward(self, src: torch.Tensor, deepprompt: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        bs = src.shape[1]
        out = torch.cat([src, _prompt_token(deepprompt, 0, bs)], dim=0) + pos
        for i, layer in enumerate(self.layers):
            out = layer(out)
            if i + 1 < len(self.layers):
                out = torch.cat([out[:-1], _prompt_token(deepprompt, i + 1, bs)], dim=0)
        return out


class DecoderDeep(nn.Module):
    def __init__(self, num_layers: int = 6, d_model: int = 128, **kw: int):
        super().__init__()
        self.layers = nn.ModuleList([DecoderLayer(d_model=d_model, **kw) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(d_model)

    def forward(self, query: torch.Tensor, deepprompt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor
                ) -> torch.Tensor:
        """Returns the final (normed) output only; the official intermediate outputs are never used."""
        bs = query.shape[1]
        out = pos + torch.cat([query, _prompt_token(deepprompt, 0, bs)], dim=0)
        for i, layer in enumerate(self.layers):
            out = layer(out, memory)
            if i + 1 < len(self.layers):
                out = torch.cat([out[:-1], _prompt_token(deepprompt, i + 1, bs)], dim=0)
        return self.norm(out)


class TransformerDeep(nn.Module):
    """6 + 6 layer encoder/decoder, d=128, 8 heads, ff 1024; the decoder's target is ignored (queries only)."""

    def __init__(self, num_encoder_layers: int = 6, num_decoder_layers: int = 6):
        super().__init__()
        self.encoder = EncoderDeep(num_encoder_layers)
        self.decoder = DecoderDeep(num_decoder_layers)

    def forward(self, src: torch.Tensor, query: torch.Tensor, pos: torch.Tensor, deepprompt: torch.Tensor
                ) -> torch.Tensor:
        """src, query (B, S, 128); pos (1, S+1, 128); deepprompt (1, 6, 128) -> (S+1, B, 128)."""
        src, query, pos = src.transpose(0, 1), query.transpose(0, 1), pos.transpose(0, 1)
        memory = self.encoder(src, deepprompt, pos)
        return self.decoder(query, deepprompt, memory, pos)


class EncoderStack(nn.Module):
    def __init__(self, num_layers: int = 6):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer() for _ in range(num_layers)])

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        out = src + pos
        for layer in self.layers:
            out = layer(out)
        return out


class TransformerST(nn.Module):
    """Encoder-only transformer of the EDN (sidetuning): (B, S, 128) + pos (1, S, 128) -> (S, B, 128)."""

    def __init__(self, num_encoder_layers: int = 6):
        super().__init__()
        self.encoder = EncoderStack(num_encoder_layers)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.encoder(src.transpose(0, 1), pos.transpose(0, 1))


