"""The PyTorch port of DeepSpeech v0.1.0 against the TensorFlow graph it reads: a tiny graph in the official layout
(TensorFlow's own BasicLSTMCell and bidirectional_dynamic_rnn, tests/head/deepspeech_graphs.py), real speech, the
long-clip batch path, the errors, and the loader choice. The GPU test compares CUDA float32 / bf16 / fp16 with the
CPU."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar.core.errors import AvatarError, WeightsError
from avatar.head.eat.deepspeech_torch import CONSTANT_NAMES, TorchDeepSpeech, expected_shapes, lstm_weights
from tests.head.deepspeech_graphs import random_constants, write_official_deepspeech

N_HIDDEN = 16


@pytest.fixture(scope="module")
def graph_path(tmp_path_factory) -> Path:
    pytest.importorskip("tensorflow")
    path = tmp_path_factory.mktemp("ds") / "deepspeech-0_1_0-b90017e8.pb"
    write_official_deepspeech(path, n_hidden=N_HIDDEN, seed=3)
    return path


@pytest.fixture(scope="module")
def both(graph_path):
    """(TensorFlow runner, torch port) on the same graph, cutting clips over 60 steps into pieces (7 of context)."""
    from avatar.head.eat.deepspeech import DeepSpeech

    tf_ds = DeepSpeech.load(graph_path, chunk_steps=60, context_steps=7)
    yield tf_ds, TorchDeepSpeech.load(graph_path, chunk_steps=60, context_steps=7)
    tf_ds.close()


@pytest.fixture(scope="module")
def speech(jfk_path) -> np.ndarray:
    from avatar.core.media import load_audio

    return load_audio(jfk_path, 16000).samples


def _inputs(speech: np.ndarray, seconds: float) -> np.ndarray:
    from avatar.head.eat.deepspeech import mfcc_input_vectors, to_int16

    return mfcc_input_vectors(to_int16(speech[:int(seconds * 16000)]))


TOL = {"rtol": 1e-5, "atol": 2e-5}  # float32 rounding; the tiny graph's logits reach about 20


def _close(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, **TOL)


# ------------------------------------------------------------------------------------------ the graph
def test_graph_holds_the_official_constants(graph_path):
    from avatar.head.eat.graphdef import read_constants

    consts = read_constants(graph_path, CONSTANT_NAMES)
    assert {k: v.shape for k, v in consts.items()} == expected_shapes(N_HIDDEN, N_HIDDEN)
    assert "bidirectional_rnn/fw/basic_lstm_cell/kernel" in consts and consts["b5"].dtype == np.float32


def test_lstm_weights_follow_tensorflows_cell():
    """One BasicLSTMCell step written out (gates i, j, f, o; forget bias 1 on f) against torch's LSTMCell."""
    rng = np.random.default_rng(0)
    n_in, n = 5, 3
    kernel = rng.standard_normal((n_in + n, 4 * n)).astype(np.float32)
    bias = rng.standard_normal(4 * n).astype(np.float32)
    x, h, c = (rng.standard_normal((2, k)).astype(np.float32) for k in (n_in, n, n))
    i, j, f, o = np.split(np.concatenate([x, h], 1) @ kernel + bias, 4, axis=1)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c_tf = c * sig(f + 1.0) + sig(i) * np.tanh(j)
    h_tf = np.tanh(c_tf) * sig(o)
    cell = torch.nn.LSTMCell(n_in, n)
    w_ih, w_hh, b = lstm_weights(kernel, bias, n_in)
    cell.load_state_dict({"weight_ih": torch.from_numpy(w_ih), "weight_hh": torch.from_numpy(w_hh),
                          "bias_ih": torch.from_numpy(b), "bias_hh": torch.zeros(4 * n)})
    h_pt, c_pt = cell(torch.from_numpy(x), (torch.from_numpy(h), torch.from_numpy(c)))
    np.testing.assert_allclose(h_pt.detach().numpy(), h_tf, atol=1e-6)
    np.testing.assert_allclose(c_pt.detach().numpy(), c_tf, atol=1e-6)


# ------------------------------------------------------------------------------------------ against TensorFlow
def test_short_clip_logits_equal_tensorflows(both, speech):
    tf_ds, pt_ds = both
    x = _inputs(speech, 1.0)  # 50 steps: one run over the whole clip
    ours = pt_ds.logits(x)
    _close(ours, tf_ds.logits(x))
    assert ours.shape == (len(x), 29) and np.abs(ours).max() > 1  # real values, not a zero output


def test_long_clip_logits_equal_tensorflows_in_pieces(both, speech):
    """250 steps in pieces of 60 (+7 each side, the last one 10 + 7): the batch path with uneven lengths."""
    tf_ds, pt_ds = both
    x = _inputs(speech, 5.0)
    ours = pt_ds.logits(x)
    _close(ours, tf_ds.logits(x))
    pt_ds.chunk_steps = 10_000
    try:
        whole = pt_ds.logits(x)
    finally:
        pt_ds.chunk_steps = 60
    assert np.abs(ours - whole).max() > 1e-3  # the pieces did run: the BiLSTM state beyond 7 steps is cut


def test_uneven_batch_rows_equal_tensorflows_and_their_own_runs(both, speech):
    tf_ds, pt_ds = both
    x = _inputs(speech, 2.0).astype(np.float32)
    lengths = [50, 37, 12]
    batch = np.zeros((3, 50, 494), np.float32)
    for b, n in enumerate(lengths):
        batch[b, :n] = x[10 * b:10 * b + n]
    ours, theirs = pt_ds._run(batch, lengths), tf_ds._run(batch, lengths)  # (T, B, 29) time-major, as the graph
    assert ours.shape == theirs.shape == (50, 3, 29)
    for b, n in enumerate(lengths):
        _close(ours[:n, b], theirs[:n, b])
        _close(ours[:n, b], pt_ds._run(batch[b:b + 1, :n], [n])[:, 0])  # padding reaches neither direction


def test_windows_equal_tensorflows(both, speech):
    tf_ds, pt_ds = both
    clip = speech[16000:16000 + 33000]  # 2.06 s: an odd number of 20 ms steps
    ours, theirs = pt_ds.windows(clip), tf_ds.windows(clip)
    assert ours.shape == theirs.shape == (51, 16, 29)
    np.testing.assert_allclose(ours, theirs, **TOL)


# ------------------------------------------------------------------------------------------ errors
def _rewrite(graph_path: Path, out: Path, edit) -> Path:
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_path.read_bytes())
    for node in graph_def.node:
        edit(tf, node)
    out.write_bytes(graph_def.SerializeToString())
    return out


def test_missing_constant_is_named(graph_path, tmp_path):
    def rename_b5(tf, node):
        if node.name == "b5":
            node.name = "b5_renamed"

    with pytest.raises(WeightsError, match=r"lacks DeepSpeech v0.1.0 constants: b5$"):
        TorchDeepSpeech.load(_rewrite(graph_path, tmp_path / "no_b5.pb", rename_b5))


def test_misshaped_constant_is_named(graph_path, tmp_path):
    def shrink_kernel(tf, node):
        if node.name == "bidirectional_rnn/bw/basic_lstm_cell/kernel":
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.zeros((47, 64), np.float32)))

    with pytest.raises(WeightsError, match=r"wrong shape: bidirectional_rnn/bw/basic_lstm_cell/kernel \(47, 64\) "
                                           r"\(expected \(48, 64\)\)$"):
        TorchDeepSpeech.load(_rewrite(graph_path, tmp_path / "bad_kernel.pb", shrink_kernel))


def test_not_a_graph_and_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        TorchDeepSpeech.load(tmp_path / "missing.pb")
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"\x00not a graph\xff" * 10)
    with pytest.raises(WeightsError, match="not a TensorFlow frozen graph"):
        TorchDeepSpeech.load(bad)
    with pytest.raises(WeightsError, match="lacks DeepSpeech v0.1.0 constants: h1, b1"):
        TorchDeepSpeech.from_constants({})


def test_half_precision_only_on_cuda():
    with pytest.raises(AvatarError, match="CUDA only"):
        TorchDeepSpeech.from_constants(random_constants(), device="cpu", dtype=torch.bfloat16)


# ------------------------------------------------------------------------------------------ which loader
def test_auto_takes_torch_without_tensorflow_or_on_a_gpu(monkeypatch):
    from avatar.head.eat.engine import deepspeech_backend

    assert deepspeech_backend("auto", torch.device("cuda")) == "torch"
    assert deepspeech_backend("auto", torch.device("cuda:1")) == "torch"
    assert deepspeech_backend("TensorFlow", torch.device("cuda")) == "tensorflow"  # asked for: as before, on the CPU
    assert deepspeech_backend("torch", torch.device("cpu")) == "torch"
    with pytest.raises(AvatarError, match="onnx"):
        deepspeech_backend("onnx", torch.device("cpu"))
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow now raises ImportError
    assert deepspeech_backend("auto", torch.device("cpu")) == "torch"


def test_auto_keeps_tensorflow_on_the_cpu():
    pytest.importorskip("tensorflow")
    from avatar.head.eat.engine import deepspeech_backend

    assert deepspeech_backend("auto", torch.device("cpu")) == "tensorflow"


def test_engine_loader_follows_the_choice(graph_path, monkeypatch):
    from avatar.head.eat.deepspeech import DeepSpeech
    from avatar.head.eat.engine import load_deepspeech

    ds = load_deepspeech(graph_path, "auto", torch.device("cpu"))
    assert isinstance(ds, DeepSpeech)
    ds.close()
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    assert isinstance(load_deepspeech(graph_path, "auto", torch.device("cpu")), TorchDeepSpeech)


def test_config_takes_the_choice():
    from avatar.core.config import AvatarConfig

    assert AvatarConfig().head.deepspeech == "auto"
    assert AvatarConfig().replace(**{"head.deepspeech": " Torch "}).head.deepspeech == "torch"
    with pytest.raises(AvatarError, match=r"\[head\] deepspeech"):
        AvatarConfig().replace(**{"head.deepspeech": "onnx"})


# ------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
@pytest.mark.parametrize("n_hidden", [64, 2048], ids=["small", "real-size"])
def test_cuda_logits_match_the_cpu(n_hidden):
    """CUDA float32 (IEEE, not cuDNN's TF32 default) equals the CPU; bf16 / fp16 stay close (errors relative to the
    largest logit; seen on an H200: 1.5e-6, 7.8e-3, 9.8e-4). One clip of 400 steps (8 s) whole, and in pieces of 150
    (the batch path with uneven lengths)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    consts = random_constants(n_hidden, seed=5)
    x = np.random.default_rng(1).standard_normal((400, 494))
    x = (x - x.mean()) / x.std()
    cpu = TorchDeepSpeech.from_constants(consts, chunk_steps=150, context_steps=20)
    for chunk_steps in (10_000, 150):
        cpu.chunk_steps = chunk_steps
        ref = cpu.logits(x)
        scale = float(np.abs(ref).max())
        for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 0.03), (torch.float16, 0.005)):
            gpu = TorchDeepSpeech.from_constants(consts, "cuda", dtype, chunk_steps=chunk_steps, context_steps=20)
            err = float(np.abs(gpu.logits(x) - ref).max()) / scale
            print(f"DeepSpeech port n_hidden={n_hidden} chunk={chunk_steps} {dtype}: max error {err:.2e} of "
                  f"max |logit| {scale:.1f} (<= {tol})")
            assert err <= tol, f"{dtype}: {err:.3g} > {tol}"


def test_bench_script_reports_both_runners(graph_path):
    import json
    import subprocess

    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "scripts/bench_deepspeech.py", str(graph_path), "--durations", "0.5",
                          "--repeats", "1"], cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    for runner in ("tensorflow", "torch"):  # the tiny graph takes about a millisecond: only the report's form
        assert report[runner]["load_s"] >= 0 and set(report[runner]["0.5s"]) == {"windows_s", "logits_s"}
