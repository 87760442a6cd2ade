"""DeepSpeech v0.1.0 speech features for EAT: 16x29 windows of character logits, one window per 25 fps frame.

Choice: the official frozen graph `deepspeech-0_1_0-b90017e8.pb` (Mozilla DeepSpeech v0.1.0, as distributed by
osmr/deepspeech_features and used by EAT, VOCA, AD-NeRF) is run as-is through `tensorflow.compat.v1` (the
tensorflow-cpu wheel; imported lazily, only when the EAT engine loads). No conversion step, no second copy of the
weights, and the numbers are the ones EAT was trained on. It runs on the CPU: about 0.1 GFLOP per 20 ms step, i.e.
well under a second per 10 s of speech, small next to the EAT generator. Where TensorFlow is not installed, or the
device is a GPU, deepspeech_torch.py runs the same .pb in PyTorch ([head] deepspeech; both use the piece runner below).

Graph interface (v0.1.0 export, as fed by EAT's preprocess/deepspeech_features/deepspeech_features.py):
  deepspeech/input_node:0     float32 (1, T, 494)  batch-major: 26 MFCC x (1 + 2*9 context) per 20 ms step
  deepspeech/input_lengths:0  int32 (1,)           = [T]
  deepspeech/logits:0         float32 (T, 1, 29)   time-major raw logits (no softmax)

Feature path (EAT's official preprocessing, reproduced step by step):
  audio float32 16 kHz -> int16 -> python_speech_features.mfcc(numcep=26, its defaults: 25 ms / 10 ms, nfft 512,
  preemph 0.97, ceplifter 22, appendEnergy) -> every 2nd row (50 fps) -> +-9 rows of context with zero rows at
  the ends -> (T, 494) -> one global (x - mean) / std -> graph -> logits[:, 0] (T, 29) -> np.interp onto
  N50 = round(duration_s * 50) points at 50 fps -> the last row dropped (the official first windowing pass with
  window 1 / stride 1 stops one row early) -> 8 zero rows each end -> 16-row windows with stride 2 ->
  float32 (ceil((N50 - 1) / 2), 16, 29).
Clips over 30 s are run in batched pieces with 2 s of context each side (see DeepSpeech): the single-sequence
BiLSTM run is bound by reading its weights every step, and a 10-minute clip would take minutes on a CPU.

The frame count is therefore ceil((N50-1)/2), which is N50/2 for even N50 and one less than ceil(N50/2) for odd
N50; EAT's window assembly covers the missing last frame with the DeepSpeech pad from pad.npy.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from avatar.core.errors import BackendUnavailable, WeightsError

DEEPSPEECH_FILE = "deepspeech-0_1_0-b90017e8.pb"
INPUT_NODE = "deepspeech/input_node:0"
INPUT_LENGTHS = "deepspeech/input_lengths:0"
LOGITS = "deepspeech/logits:0"

SAMPLE_RATE = 16000  # Hz
NUM_CEPSTRUM = 26
NUM_CONTEXT = 9  # rows of context each side
DS_FPS = 50  # one logit row per 2 MFCC rows of 10 ms
N_CHARS = 29
WIN_ROWS = 16  # rows per window (0.32 s)
WIN_STRIDE = 2  # 50 fps rows -> 25 fps windows


def to_int16(samples: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16 PCM (what the official code reads from a 16-bit wav)."""
    return np.clip(np.round(np.asarray(samples, np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def mfcc_input_vectors(audio_int16: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """int16 16 kHz (L,) -> standardised float64 (T, 494) network input, T = ceil(mfcc_rows / 2)."""
    from python_speech_features import mfcc

    feats = mfcc(signal=audio_int16, samplerate=sample_rate, numcep=NUM_CEPSTRUM)[::2]
    n_steps = len(feats)
    padded = np.concatenate([np.zeros((NUM_CONTEXT, NUM_CEPSTRUM)), feats, np.zeros((NUM_CONTEXT, NUM_CEPSTRUM))])
    span = 2 * NUM_CONTEXT + 1
    ctx = np.stack([padded[i:i + n_steps] for i in range(span)], axis=1)  # (T, 19, 26): rows t-9..t+9
    x = ctx.reshape(n_steps, span * NUM_CEPSTRUM)
    return (x - x.mean()) / x.std()


def interpolate_rows(logits: np.ndarray, n_out: int, rate_in: float = DS_FPS, rate_out: float = DS_FPS) -> np.ndarray:
    """(T, C) rows at rate_in -> (n_out, C) float64 rows at rate_out by linear interpolation (ends held)."""
    t_in = np.arange(len(logits)) / float(rate_in)
    t_out = np.arange(n_out) / float(rate_out)
    return np.stack([np.interp(t_out, t_in, logits[:, c]) for c in range(logits.shape[1])], axis=1).reshape(n_out, -1)


def frame_windows(rows_50fps: np.ndarray) -> np.ndarray:
    """(N50, 29) -> float32 (ceil((N50-1)/2), 16, 29): drop the last row, pad 8 zero rows each end, 16-row windows
    every 2 rows (official two-pass windowing)."""
    rows = rows_50fps[:-1]
    half = WIN_ROWS // 2
    padded = np.concatenate([np.zeros((half, rows.shape[1])), rows, np.zeros((half, rows.shape[1]))])
    starts = range(0, len(padded) - WIN_ROWS, WIN_STRIDE)
    out = np.stack([padded[s:s + WIN_ROWS] for s in starts]) if len(starts) else np.zeros((0, WIN_ROWS, rows.shape[1]))
    return out.astype(np.float32)


def deepspeech_windows(samples_16k: np.ndarray, run_graph: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """float32 16 kHz speech (L,) -> float32 (ceil((N50-1)/2), 16, 29) windows; run_graph maps (T,494) -> (T,29)."""
    x = mfcc_input_vectors(to_int16(samples_16k))
    logits = run_graph(x)
    n50 = int(round(len(samples_16k) / SAMPLE_RATE * DS_FPS))
    return frame_windows(interpolate_rows(logits, n50))


CHUNK_STEPS = 1500  # 30 s: longer inputs are cut into pieces run as one batch (the BiLSTM is weight-bound at batch 1)
CONTEXT_STEPS = 100  # 2 s of extra steps each side of a piece, run and discarded, so the BiLSTM sees its neighbours
MAX_BATCH = 8  # pieces per session run (bounds the LSTM activations: ~8 x 1700 x 4096 floats)


def chunk_spans(n_steps: int, chunk_steps: int = CHUNK_STEPS, context_steps: int = CONTEXT_STEPS
                ) -> list[tuple[int, int, int, int]]:
    """(lo, start, stop, hi) per piece: rows [start, stop) are kept from the run over [lo, hi)."""
    spans = []
    for start in range(0, n_steps, chunk_steps):
        stop = min(start + chunk_steps, n_steps)
        spans.append((max(0, start - context_steps), start, stop, min(n_steps, stop + context_steps)))
    return spans


# (B, T, 494) float32 batch-major inputs, valid steps per row -> (T, B, 29) time-major logits (the graph's layout)
RunBatch = Callable[[np.ndarray, list[int]], np.ndarray]


def stitched_logits(inputs: np.ndarray, spans: list[tuple[int, int, int, int]], run: RunBatch) -> np.ndarray:
    """(T, 494) -> (T, 29): the spans (chunk_spans) run MAX_BATCH at a time; each keeps rows [start, stop)."""
    return np.concatenate([piece for i in range(0, len(spans), MAX_BATCH)
                           for piece in run_spans(inputs, spans[i:i + MAX_BATCH], run)])


def run_spans(inputs: np.ndarray, spans: list[tuple[int, int, int, int]], run: RunBatch) -> list[np.ndarray]:
    """One batch of spans, zero-padded to the longest, with their own lengths -> the kept rows of each."""
    longest = max(hi - lo for lo, _, _, hi in spans)
    batch = np.zeros((len(spans), longest, inputs.shape[1]), np.float32)
    for b, (lo, _, _, hi) in enumerate(spans):
        batch[b, :hi - lo] = inputs[lo:hi]
    out = run(batch, [hi - lo for lo, _, _, hi in spans])
    return [out[start - lo:stop - lo, b] for b, (lo, start, stop, _) in enumerate(spans)]


class DeepSpeech:
    """The frozen v0.1.0 graph in its own tf.Graph and Session (built once, reused for every clip).

    Up to chunk_steps steps (30 s) the graph sees the whole clip, exactly as EAT's preprocessing. Longer clips
    are cut into 30 s pieces with 2 s of context each side and run as batches: the recurrent layer reads its
    ~134 MB weight matrix per step whatever the batch, so batching makes a 10-minute clip several times faster;
    the features then differ from a single run only through the BiLSTM state beyond 2 s. If the graph refuses a
    batch (a fixed batch of 1), the whole clip is run at once instead.
    """

    def __init__(self, session: Any, tensors: tuple[Any, Any, Any], chunk_steps: int = CHUNK_STEPS,
                 context_steps: int = CONTEXT_STEPS):
        self._session = session
        self._input, self._lengths, self._logits = tensors
        self.chunk_steps, self.context_steps = chunk_steps, context_steps
        self._batched = True

    @classmethod
    def load(cls, pb_path: str | Path, chunk_steps: int = CHUNK_STEPS, context_steps: int = CONTEXT_STEPS
             ) -> "DeepSpeech":
        p = Path(pb_path)
        if not p.is_file():
            raise WeightsError(f"DeepSpeech graph not found: {p}")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's start-up banner is noise in our logs
        try:
            import tensorflow as tf
        except ImportError as e:
            raise BackendUnavailable(f"tensorflow is needed for EAT's DeepSpeech features: {e}") from None
        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(p.read_bytes())
        except Exception as e:  # protobuf raises its own DecodeError
            raise WeightsError(f"{p.name} is not a TensorFlow frozen graph ({e})") from None
        graph = tf.Graph()
        with graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="deepspeech")
        try:
            tensors = tuple(graph.get_tensor_by_name(n) for n in (INPUT_NODE, INPUT_LENGTHS, LOGITS))
        except KeyError as e:
            raise WeightsError(f"{p.name} lacks a DeepSpeech v0.1.0 tensor: {e}") from None
        return cls(tf.compat.v1.Session(graph=graph), tensors, chunk_steps, context_steps)

    def _run(self, batch: np.ndarray, lengths: list[int]) -> np.ndarray:
        """(B, T, 494) batch-major -> (T, B, 29) time-major logits."""
        feed = {self._input: batch.astype(np.float32), self._lengths: np.asarray(lengths, np.int32)}
        return np.asarray(self._session.run(self._logits, feed_dict=feed))

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """(T, 494) standardised MFCC context vectors -> (T, 29) raw logits."""
        if len(inputs) <= self.chunk_steps or not self._batched:
            return self._run(inputs[np.newaxis], [len(inputs)])[:, 0]
        spans = chunk_spans(len(inputs), self.chunk_steps, self.context_steps)
        try:
            return stitched_logits(inputs, spans, self._run)
        except Exception:  # noqa: BLE001 - tf.errors.* when the graph's batch size is fixed
            self._batched = False
            return self._run(inputs[np.newaxis], [len(inputs)])[:, 0]

    def windows(self, samples_16k: np.ndarray) -> np.ndarray:
        """float32 16 kHz speech -> float32 (ceil((N50-1)/2), 16, 29) EAT DeepSpeech windows."""
        return deepspeech_windows(samples_16k, self.logits)

    def close(self) -> None:
        self._session.close()
