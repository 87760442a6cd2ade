"""DeepSpeech v0.1.0 features in PyTorch, read from the same frozen graph `deepspeech-0_1_0-b90017e8.pb`, with no
TensorFlow: the EAT engine on a GPU machine where TensorFlow is not installed (and cuDNN runs the BiLSTM there).

What the official graph holds (read from mozilla/DeepSpeech at tag v0.1.0, commit b7abbd9e, DeepSpeech.py:
BiRNN(), create_inference_graph(), export(); README.md there installs TensorFlow 1.3.0rc0 wheels):
  input_node     float32 (B, T, 494) placeholder, batch-major; input_lengths int32 (B,) placeholder
  h1 (494, 2048) b1 (2048,)   h2 (2048, 2048) b2   h3 (2048, 4096) b3 (4096,)   min(relu(x h + b), 20) each
      (n_hidden = 2048 = n_cell_dim; n_hidden_3 = 2 * n_cell_dim = 4096 is the LSTM's input)
  bidirectional_rnn/fw/basic_lstm_cell/kernel (6144, 8192) and .../bias (8192,); the same under bw/:
      tf.contrib.rnn.BasicLSTMCell(2048, forget_bias=1.0) in tf.nn.bidirectional_dynamic_rnn(time_major=True,
      sequence_length=input_lengths). TensorFlow 1.2 renamed the RNN cells' variables "weights"/"biases" to
      "kernel"/"bias" (its RELEASE.md), so a 1.3 export has kernel/bias. The cell computes
      [i, j, f, o] = [x, h] @ kernel + bias, c' = sigmoid(f + 1.0) c + sigmoid(i) tanh(j), h' = sigmoid(o) tanh(c')
      (tensorflow/python/keras/layers/legacy_rnn/rnn_cell_impl.py, BasicLSTMCell.call, in TF 2.18 too).
  h5 (4096, 2048) b5 min(relu(.), 20);  h6 (2048, 29) b6;  logits = reshape to (T, B, 29), time-major, raw.
  Dropout is built with keep probability 1 in the export; the decoder after `logits` is not used here.
These constant names are confirmed by carlini/audio_adversarial_examples (make_checkpoint.py copies every
variable of DeepSpeech 0.1.1's BiRNN from Mozilla's v0.1.0 output_graph.pb by name: b1..h6 and
bidirectional_rnn/{fw,bw}/basic_lstm_cell/{kernel,bias}); osmr/deepspeech_features (deepspeech_features.py)
feeds the same .pb through deepspeech/input_node:0, deepspeech/input_lengths:0, deepspeech/logits:0.

Mapping (models/deepspeech.py): h_k / b_k -> dense_k.weight = h_k^T, dense_k.bias = b_k; the LSTM kernel's columns
[i | j | f | o] become torch's rows [i | f | g=j | o], split into weight_ih (first 4096 inputs) and weight_hh (the
last 2048), the forget bias 1.0 added to the f part of bias_ih, bias_hh zero. Padded steps of a batch run as in
TensorFlow (packed sequences: each row's LSTM runs over its own length, the backward one from its own end).

Precision: float32 matches the TensorFlow graph to float32 rounding. On CUDA float32 is IEEE float32 (cuDNN
otherwise runs float32 LSTMs in TF32); float16 / bfloat16 are allowed there and differ by their rounding.
"""
from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from avatar.core.devices import fp32_precision
from avatar.core.errors import AvatarError, BackendUnavailable, WeightsError

from .deepspeech import CHUNK_STEPS, CONTEXT_STEPS, chunk_spans, deepspeech_windows, stitched_logits
from .graphdef import read_constants

N_INPUT, N_CHARS = 494, 29  # fixed by EAT's features: 26 MFCC x 19 rows in, 16x29 windows out
FORGET_BIAS = 1.0  # BasicLSTMCell(forget_bias=1.0), added to the f gate at run time, not stored in the graph
DENSE = {"dense1": ("h1", "b1"), "dense2": ("h2", "b2"), "dense3": ("h3", "b3"), "dense5": ("h5", "b5"),
         "dense6": ("h6", "b6")}
LSTM_SUFFIX = {"fw": "", "bw": "_reverse"}  # TF direction -> torch nn.LSTM parameter suffix


def lstm_name(direction: str, part: str) -> str:
    """('fw', 'kernel') -> 'bidirectional_rnn/fw/basic_lstm_cell/kernel'."""
    return f"bidirectional_rnn/{direction}/basic_lstm_cell/{part}"


def expected_shapes(n_hidden: int = 2048, n_cell: int = 2048) -> dict[str, tuple[int, ...]]:
    shapes = {"h1": (N_INPUT, n_hidden), "b1": (n_hidden,), "h2": (n_hidden, n_hidden), "b2": (n_hidden,),
              "h3": (n_hidden, 2 * n_cell), "b3": (2 * n_cell,), "h5": (2 * n_cell, n_hidden), "b5": (n_hidden,),
              "h6": (n_hidden, N_CHARS), "b6": (N_CHARS,)}
    for direction in LSTM_SUFFIX:
        shapes[lstm_name(direction, "kernel")] = (3 * n_cell, 4 * n_cell)
        shapes[lstm_name(direction, "bias")] = (4 * n_cell,)
    return shapes


CONSTANT_NAMES = tuple(expected_shapes())


def _dims(consts: dict[str, np.ndarray], where: list[tuple[str, int]], per: int = 1) -> int:
    """The size most constants agree on (so the error names the odd one out, not its neighbours)."""
    sizes = [consts[n].shape[axis] // per for n, axis in where if consts[n].ndim > axis]
    return Counter(sizes).most_common(1)[0][0] if sizes else 0


def graph_sizes(consts: dict[str, np.ndarray], source: str = "graph") -> tuple[int, int]:
    """(n_hidden, n_cell) of a DeepSpeech v0.1.0 graph; WeightsError naming missing or misshaped constants."""
    missing = [n for n in CONSTANT_NAMES if n not in consts]
    if missing:
        raise WeightsError(f"{source} lacks DeepSpeech v0.1.0 constants: {', '.join(missing)}")
    n_hidden = _dims(consts, [("b1", 0), ("h2", 0), ("h2", 1), ("b2", 0), ("h3", 0), ("b5", 0), ("h6", 0)])
    kernels = [(lstm_name(d, p), 0 if p == "bias" else 1) for d in LSTM_SUFFIX for p in ("kernel", "bias")]
    n_cell = _dims(consts, kernels, per=4)
    wrong = [f"{n} {tuple(consts[n].shape)} (expected {shape})"
             for n, shape in expected_shapes(n_hidden, n_cell).items() if tuple(consts[n].shape) != shape]
    if wrong or n_hidden < 1 or n_cell < 1:
        raise WeightsError(f"{source}: DeepSpeech v0.1.0 constants of the wrong shape: {', '.join(wrong) or 'empty'}")
    return n_hidden, n_cell


def lstm_weights(kernel: np.ndarray, bias: np.ndarray, n_input: int, forget_bias: float = FORGET_BIAS
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TF BasicLSTMCell kernel (n_input + n_cell, 4 n_cell), bias (4 n_cell,) -> torch (weight_ih, weight_hh, bias).

    TF gates [i, j, f, o] (j: the candidate, f gets forget_bias) -> torch rows [i, f, g, o]."""
    i, j, f, o = np.split(kernel.T, 4)
    gates = np.concatenate([i, f, j, o])
    b_i, b_j, b_f, b_o = np.split(bias, 4)
    b = np.concatenate([b_i, b_f + np.float32(forget_bias), b_j, b_o])
    return np.ascontiguousarray(gates[:, :n_input]), np.ascontiguousarray(gates[:, n_input:]), b


def torch_state(consts: dict[str, np.ndarray], n_cell: int) -> dict[str, np.ndarray]:
    """Graph constants -> models.deepspeech.DeepSpeechNet's state_dict, as float32 numpy arrays."""
    state = {}
    for layer, (w, b) in DENSE.items():
        state[f"{layer}.weight"] = np.ascontiguousarray(consts[w].T)
        state[f"{layer}.bias"] = np.array(consts[b])  # a copy: the graph's bytes are read-only
    for direction, suffix in LSTM_SUFFIX.items():
        w_ih, w_hh, b = lstm_weights(consts[lstm_name(direction, "kernel")], consts[lstm_name(direction, "bias")],
                                     2 * n_cell)
        state.update({f"lstm.weight_ih_l0{suffix}": w_ih, f"lstm.weight_hh_l0{suffix}": w_hh,
                      f"lstm.bias_ih_l0{suffix}": b, f"lstm.bias_hh_l0{suffix}": np.zeros_like(b)})
    return state


def _torch() -> Any:
    try:
        import torch
    except ImportError as e:
        raise BackendUnavailable(f"PyTorch is needed for the DeepSpeech port: {e}") from None
    return torch


def build_net(consts: dict[str, np.ndarray], source: str = "graph") -> Any:
    """Checked constants -> DeepSpeechNet (CPU, float32, eval, no grad), loaded strictly."""
    torch = _torch()
    from models.deepspeech import DeepSpeechConfig, DeepSpeechNet

    n_hidden, n_cell = graph_sizes(consts, source)
    state = {k: torch.from_numpy(v) for k, v in torch_state(consts, n_cell).items()}
    with torch.device("meta"):  # no random init of ~123 M parameters that are replaced at once
        net = DeepSpeechNet(DeepSpeechConfig(n_hidden=n_hidden, n_cell=n_cell))
    result = net.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(f"{source}: DeepSpeech port: missing {result.missing_keys}, "
                           f"unexpected {result.unexpected_keys}")
    return net.eval().requires_grad_(False)


def check_dtype(dtype: Any, device: Any) -> None:
    torch = _torch()
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise AvatarError(f"DeepSpeech port: dtype {dtype} is not float32, float16 or bfloat16")
    if dtype != torch.float32 and device.type != "cuda":
        raise AvatarError(f"DeepSpeech port: {dtype} runs on CUDA only; use float32 on {device}")


def ieee_float32(enabled: bool):
    """Plain float32 for cuDNN's LSTM and cuBLAS inside the block (cuDNN's default for float32 RNNs is TF32, whose
    rounding the recurrence carries along 1500 steps); the previous settings are restored."""
    torch = _torch()
    return fp32_precision([torch.backends.cudnn.rnn, torch.backends.cuda.matmul], "ieee" if enabled else None)


class TorchDeepSpeech:
    """DeepSpeech's interface (logits, windows, close) on a torch device; long clips in batched pieces as there.

    Up to chunk_steps steps (30 s) the network sees the whole clip; longer clips run as 30 s pieces with 2 s of
    context each side, MAX_BATCH pieces per call, each over its own length (chunk_spans / stitched_logits, shared
    with the TensorFlow runner, so both give the same features).
    """

    def __init__(self, net: Any, device: Any, dtype: Any, chunk_steps: int = CHUNK_STEPS,
                 context_steps: int = CONTEXT_STEPS):
        self.net, self.device, self.dtype = net, device, dtype
        self.chunk_steps, self.context_steps = chunk_steps, context_steps

    @classmethod
    def load(cls, pb_path: str | Path, device: Any = "cpu", dtype: Any = None, chunk_steps: int = CHUNK_STEPS,
             context_steps: int = CONTEXT_STEPS) -> "TorchDeepSpeech":
        """The frozen v0.1.0 graph -> the port on `device` in `dtype` (default float32)."""
        _torch()
        consts = read_constants(pb_path, CONSTANT_NAMES)
        return cls.from_constants(consts, device, dtype, chunk_steps, context_steps, source=Path(pb_path).name)

    @classmethod
    def from_constants(cls, consts: dict[str, np.ndarray], device: Any = "cpu", dtype: Any = None,
                       chunk_steps: int = CHUNK_STEPS, context_steps: int = CONTEXT_STEPS, source: str = "graph"
                       ) -> "TorchDeepSpeech":
        torch = _torch()
        device, dtype = torch.device(device), dtype or torch.float32
        check_dtype(dtype, device)
        net = build_net(consts, source).to(device=device, dtype=dtype)
        net.lstm.flatten_parameters()  # one cuDNN weight buffer (loading by assignment left separate tensors)
        return cls(net, device, dtype, chunk_steps, context_steps)

    def _run(self, batch: np.ndarray, lengths: list[int]) -> np.ndarray:
        """(B, T, 494) batch-major -> (T, B, 29) time-major float32 logits (the graph's layout)."""
        torch = _torch()
        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device, self.dtype)
        exact = self.device.type == "cuda" and self.dtype == torch.float32
        with torch.inference_mode(), ieee_float32(exact), warnings.catch_warnings():
            # torch flattens cuDNN LSTM weights for fp16/fp32 only; in bf16 cuDNN copies them into one buffer per
            # call (~0.1 ms for 200 MB on a GPU) and warns about it
            warnings.filterwarnings("ignore", "RNN module weights are not part of single contiguous chunk")
            out = self.net(x, torch.as_tensor(lengths, dtype=torch.int64))
        return out.float().transpose(0, 1).cpu().numpy()

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """(T, 494) standardised MFCC context vectors -> (T, 29) raw logits."""
        if len(inputs) <= self.chunk_steps:
            return self._run(inputs[np.newaxis], [len(inputs)])[:, 0]
        return stitched_logits(inputs, chunk_spans(len(inputs), self.chunk_steps, self.context_steps), self._run)

    def windows(self, samples_16k: np.ndarray) -> np.ndarray:
        """float32 16 kHz speech -> float32 (ceil((N50-1)/2), 16, 29) EAT DeepSpeech windows."""
        return deepspeech_windows(samples_16k, self.logits)

    def close(self) -> None:
        self.net = None
