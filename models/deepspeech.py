"""Mozilla DeepSpeech v0.1.0's acoustic network (BiRNN() of DeepSpeech.py at tag v0.1.0), inference only.

    (B, T, 494) standardised MFCC context vectors
      -> dense1, dense2 (n_hidden) and dense3 (2 * n_cell), each min(relu(x W + b), relu_clip)
      -> bidirectional LSTM of n_cell units per direction (each sequence runs over its own length; outputs past it
         are zeros, as tf.nn.bidirectional_dynamic_rnn with sequence_length gives)
      -> dense5 (n_hidden) min(relu(.), relu_clip) -> dense6 -> (B, T, n_chars) raw logits

The released model has n_hidden = n_cell = 2048, relu_clip 20, 29 characters (about 123 M parameters). Dropout is
off in the exported graph, so there is none here. Parameter names follow torch (nn.Linear / nn.LSTM); the mapping
from the frozen TensorFlow graph is avatar/head/eat/deepspeech_torch.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


@dataclass(frozen=True)
class DeepSpeechConfig:
    n_input: int = 494  # 26 MFCC x (1 + 2 x 9 context rows)
    n_hidden: int = 2048  # width of dense1, dense2 and dense5
    n_cell: int = 2048  # LSTM units per direction; dense3 is 2 * n_cell wide (the LSTM's input)
    n_chars: int = 29  # space, a-z, apostrophe, CTC blank
    relu_clip: float = 20.0


class DeepSpeechNet(nn.Module):
    def __init__(self, cfg: DeepSpeechConfig = DeepSpeechConfig()):
        super().__init__()
        self.cfg = cfg
        self.dense1 = nn.Linear(cfg.n_input, cfg.n_hidden)
        self.dense2 = nn.Linear(cfg.n_hidden, cfg.n_hidden)
        self.dense3 = nn.Linear(cfg.n_hidden, 2 * cfg.n_cell)
        self.lstm = nn.LSTM(2 * cfg.n_cell, cfg.n_cell, batch_first=True, bidirectional=True)
        self.dense5 = nn.Linear(2 * cfg.n_cell, cfg.n_hidden)
        self.dense6 = nn.Linear(cfg.n_hidden, cfg.n_chars)

    def _clipped(self, layer: nn.Linear, x: Tensor) -> Tensor:
        return layer(x).clamp(0.0, self.cfg.relu_clip)  # = min(relu(x), clip)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x (B, T, n_input), lengths (B,) int64 valid steps per row -> (B, T, n_chars) logits."""
        h = self._clipped(self.dense3, self._clipped(self.dense2, self._clipped(self.dense1, x)))
        packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=x.shape[1])
        return self.dense6(self._clipped(self.dense5, out))
