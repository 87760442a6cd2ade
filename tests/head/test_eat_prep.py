"""EAT preprocessing: mel vs the official (torchaudio) output, window assembly vs the official demo's windows,
pose logits / pose images, and the DeepSpeech feature path on a tiny frozen TensorFlow graph."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from avatar.head.eat import prep as ep

SHARED = Path(__file__).resolve().parents[3] / "shared"
PARITY = SHARED / "reference" / "eat_parity.npz"
JFK = SHARED / "fixtures" / "speech" / "jfk.flac"


@pytest.fixture(scope="module")
def ref():
    if not PARITY.is_file():
        pytest.skip("shared/reference/eat_parity.npz not found")
    return np.load(PARITY)


# ---------------------------------------------------------------- mel
def test_mel_matches_official(ref):
    mel = ep.mel_spectrogram(ref["prep_wave_16k"])
    assert mel.shape == ref["prep_mel_full"].shape == (80, 5) and mel.dtype == np.float32
    assert np.abs(mel - ref["prep_mel_full"]).max() < 1e-4


def test_mel_filterbank_matches_librosa_htk():
    import librosa

    ours = ep.mel_filterbank().numpy().T  # (80, 1025)
    theirs = librosa.filters.mel(sr=16000, n_fft=2048, n_mels=80, htk=True, norm=None)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-5


@pytest.mark.parametrize("n_samples", [700, 1024, 4800, 16000 + 123])
def test_mel_one_column_per_frame(n_samples):
    wave = np.random.default_rng(n_samples).standard_normal(n_samples).astype(np.float32) * 0.1
    mel = ep.mel_spectrogram(wave)
    assert mel.shape == (80, n_samples // 640 + 1)
    assert np.isfinite(mel).all()


def test_mel_is_local_in_time():
    """A click in frame 20 changes the columns around it, not those far away (hop = 1 frame, n_fft = 3.2 frames)."""
    wave = np.random.default_rng(0).standard_normal(64000).astype(np.float32) * 0.01
    clicked = wave.copy()
    clicked[20 * 640] += 0.9
    diff = np.abs(ep.mel_spectrogram(clicked) - ep.mel_spectrogram(wave)).max(axis=0)
    assert diff[20] > 0.1 and diff[:18].max() == 0 and diff[23:].max() == 0


# ---------------------------------------------------------------- windows
def test_windows_match_official(ref):
    idx = ep.window_indices(range(4), n_valid=4)
    mel = ep.mel_windows(ref["prep_mel_full"], ref["prep_pad_mel"], idx)
    deep = ep.deep_windows(ref["prep_deepfeature"], ref["prep_pad_deep"], idx)
    pidx = ep.pose_window_indices(range(4), n_valid=4, n_pose=4)
    pose = ep.pose_windows(lambda i: ref["prep_poseimg"][i], pidx)
    np.testing.assert_array_equal(mel, ref["in_mel"])
    np.testing.assert_array_equal(deep, ref["in_deep"])
    np.testing.assert_array_equal(pose, ref["in_pose"])


def _streams(ref, n_frames: int, n_mel: int, n_deep: int) -> ep.FeatureStreams:
    rng = np.random.default_rng(n_frames)
    angles = rng.uniform(-20, 20, (n_frames, 3))
    pose = ep.pose_logits_from_degrees(angles, rng.normal(0, 0.02, (n_frames, 3)))
    return ep.FeatureStreams(mel=rng.standard_normal((80, n_mel)).astype(np.float32),
                             deep=rng.standard_normal((n_deep, 16, 29)).astype(np.float32), pose=pose,
                             pad_mel=ref["prep_pad_mel"], pad_deep=ref["prep_pad_deep"])


def test_windows_in_batches_equal_whole_clip(ref):
    s = _streams(ref, n_frames=13, n_mel=14, n_deep=12)  # deep is one short: frame 12 uses the pad
    whole = s.windows(0, 13)
    parts = [s.windows(a, min(a + 5, 13)) for a in range(0, 13, 5)]
    np.testing.assert_array_equal(np.concatenate([p["mel"] for p in parts], axis=1), whole["mel"])
    np.testing.assert_array_equal(np.concatenate([p["deep"] for p in parts], axis=1), whole["deep"])
    np.testing.assert_array_equal(np.concatenate([p["pose"] for p in parts], axis=0), whole["pose"])
    assert whole["mel"].shape == (1, 13, 1, 80, 11) and whole["deep"].shape == (1, 13, 11, 16, 29)
    assert whole["pose"].shape == (13, 11, 1, 64, 64)


def test_windows_use_pads_beyond_the_shortest_stream(ref):
    s = _streams(ref, n_frames=13, n_mel=14, n_deep=12)
    assert s.n_valid == 12
    w = s.windows(12, 13)  # last frame: centre index 12 is past the DeepSpeech stream -> pads everywhere from it
    np.testing.assert_array_equal(w["mel"][0, 0, 0, :, 5], ref["prep_pad_mel"])  # though mel has column 12
    np.testing.assert_array_equal(w["deep"][0, 0, 5], ref["prep_pad_deep"])
    np.testing.assert_array_equal(w["mel"][0, 0, 0, :, 4], s.mel[:, 11])
    last_pose = ep.pose_images(s.pose.take(np.array([12])))[0]
    np.testing.assert_array_equal(w["pose"][0, 5], last_pose)
    first = s.windows(0, 1)
    np.testing.assert_array_equal(first["pose"][0, 0], first["pose"][0, 5])  # before the clip: the first pose


# ---------------------------------------------------------------- pose
def test_pose_logits_round_trip_degrees():
    angles = np.array([-90.0, -45.5, -12.3, -0.7, 0.0, 3.3, 17.0, 44.4, 90.0])
    logits = ep.degrees_to_logits(angles)
    assert logits.shape == (9, 66) and logits.dtype == np.float32
    np.testing.assert_allclose(ep.logits_to_degrees(logits), angles, atol=2e-3)
    np.testing.assert_array_equal(logits.argmax(-1), np.round((angles + 99) / 3).astype(int))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    assert (p.max(-1) > 0.35).all()  # a peak ~1 bin wide, not a flat distribution


def test_pose_logits_from_sequence_and_static(ref):
    angles = np.array([[5.0, -3.0, 1.0], [-8.0, 2.0, 0.0]], np.float32)
    pose = ep.pose_logits_from_degrees(angles, np.zeros((2, 3)))
    for k, col in (("yaw", 0), ("pitch", 1), ("roll", 2)):
        np.testing.assert_allclose(ep.logits_to_degrees(getattr(pose, k)), angles[:, col], atol=2e-3)
    he = {"yaw": ref["in_he_driving_yaw"][0, :1], "pitch": ref["in_he_driving_pitch"][0, :1],
          "roll": ref["in_he_driving_roll"][0, :1], "t": ref["in_he_driving_t"][0, :1]}
    still = ep.static_pose(he, 4)
    assert len(still) == 4 and still.yaw.shape == (4, 66) and still.t.shape == (4, 3)
    np.testing.assert_array_equal(still.roll[3], he["roll"][0])


def test_antialias_kernel_is_eats_gaussian():
    sys.path.insert(0, str(SHARED / "tools"))
    from seeded_weights import seeded_state_dict

    sd = seeded_state_dict(SHARED / "reference" / "eat.tsv", 1234, prefix="kp_detector.down.", strip=True)
    np.testing.assert_allclose(ep._antialias_kernel().numpy()[0, 0], sd["weight"].numpy()[0, 0], rtol=1e-5, atol=1e-9)


def test_separable_downsample_equals_eats_conv():
    import torch

    x = torch.from_numpy(np.stack([ep.draw_pose_box(r, np.array([0.0, 0.0, 0.03]))
                                   for r in ep.rotation_matrices(np.array([20.0, 33, 45]), np.array([33.0, 30, 40]),
                                                                 np.array([33.0, 36, 20]))])).unsqueeze(1).float()
    full = ep.antialias_downsample(x)
    assert full.shape == (3, 1, 64, 64)
    np.testing.assert_allclose(ep.antialias_downsample_separable(x.numpy()), full.numpy(), rtol=0, atol=1e-3)


def test_pose_images_shape_range_and_yaw_moves_the_box():
    t = np.array([[0.0, 0.0, 0.03]] * 3, np.float32)
    pose = ep.pose_logits_from_degrees(np.array([[0, 0, 0], [0, 0, 0], [25, 0, 0]], np.float32), t)
    imgs = ep.pose_images(pose)
    assert imgs.shape == (3, 1, 64, 64) and imgs.dtype == np.float32
    assert imgs.min() >= 0 and imgs.max() <= 255.0 + 1e-3 and imgs.max() > 50  # lines drawn at 255, then blurred
    np.testing.assert_array_equal(imgs[0], imgs[1])
    moved = np.abs(imgs[2] - imgs[0])
    assert moved.max() > 50 and (moved > 10).mean() > 0.01


def test_draw_pose_box_draws_on_float_canvas():
    img = ep.draw_pose_box(ep.rotation_matrices(np.array([33.0]), np.array([33.0]), np.array([33.0]))[0],
                           np.array([0.0, 0.0, 0.03]))
    assert img.shape == (256, 256) and img.dtype == np.float64
    assert set(np.unique(img)) <= {0.0, 255.0} and (img > 0).sum() > 200  # 8-connected lines, no AA on float


# ---------------------------------------------------------------- DeepSpeech
def write_tiny_deepspeech(path: Path, seed: int = 0, batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A frozen TF1 graph with DeepSpeech v0.1.0's tensor names and layout: input_node (B,T,494) batch-major,
    input_lengths (B,), logits (T,B,29) time-major = 5*tanh(x W + b)*mask - 6. Returns (W, b). Per step, so the
    windowing is checked against a formula (the official network itself: tests/head/deepspeech_graphs.py)."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((494, 29)) / 22.0).astype(np.float32)
    b = rng.standard_normal(29).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [batch, None, 494], name="input_node")
        lengths = tf.compat.v1.placeholder(tf.int32, [None], name="input_lengths")
        wv, bv = tf.compat.v1.Variable(w, name="w"), tf.compat.v1.Variable(b, name="b")
        h = tf.tanh(tf.einsum("tbi,ij->tbj", tf.transpose(x, [1, 0, 2]), wv) + bv) * 5.0
        mask = tf.transpose(tf.sequence_mask(lengths, tf.shape(x)[1], dtype=tf.float32))[:, :, None]
        tf.identity(h * mask - 6.0, name="logits")
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), ["logits"])
    Path(path).write_bytes(frozen.SerializeToString())
    return w, b


@pytest.fixture(scope="module")
def tiny_ds(tmp_path_factory):
    from avatar.head.eat.deepspeech import DEEPSPEECH_FILE, DeepSpeech

    path = tmp_path_factory.mktemp("ds") / DEEPSPEECH_FILE
    w, b = write_tiny_deepspeech(path)
    return DeepSpeech.load(path), w, b


@pytest.fixture(scope="module")
def jfk_16k():
    from avatar.core.media import load_audio

    return load_audio(JFK, 16000).samples


def test_mfcc_input_vectors_layout(jfk_16k):
    from python_speech_features import mfcc

    from avatar.head.eat.deepspeech import mfcc_input_vectors, to_int16

    pcm = to_int16(jfk_16k[:16000])
    x = mfcc_input_vectors(pcm)
    raw = mfcc(pcm, samplerate=16000, numcep=26)[::2]
    assert x.shape == (len(raw), 494)
    assert abs(x.mean()) < 1e-9 and abs(x.std() - 1) < 1e-9
    # row t = mfcc rows t-9..t+9 (zeros outside), standardised with one global mean / std
    padded = np.concatenate([np.zeros((9, 26)), raw, np.zeros((9, 26))])
    ctx = np.stack([padded[i:i + len(raw)] for i in range(19)], 1).reshape(len(raw), -1)
    np.testing.assert_allclose(x, (ctx - ctx.mean()) / ctx.std(), atol=1e-9)
    np.testing.assert_array_equal(ctx[10, 9 * 26:10 * 26], raw[10])
    np.testing.assert_array_equal(ctx[10, 8 * 26:9 * 26], raw[9])
    np.testing.assert_array_equal(ctx[0, :9 * 26], 0)


@pytest.mark.parametrize("duration_s", [0.4, 0.46, 1.0, 2.02])
def test_deepspeech_windows_shape_and_values(tiny_ds, jfk_16k, duration_s):
    from avatar.head.eat.deepspeech import mfcc_input_vectors, to_int16

    ds, w, b = tiny_ds
    clip = jfk_16k[16000:16000 + int(round(duration_s * 16000))]
    win = ds.windows(clip)
    n50 = int(round(len(clip) / 16000 * 50))
    assert win.shape == (math.ceil((n50 - 1) / 2), 16, 29) and win.dtype == np.float32
    # the graph sees the batch-major input and returns time-major logits: check against the numpy formula
    x = mfcc_input_vectors(to_int16(clip)).astype(np.float32)
    logits = np.tanh(x @ w + b) * 5.0 - 6.0
    rows = np.stack([np.interp(np.arange(n50) / 50, np.arange(len(logits)) / 50, logits[:, c]) for c in range(29)], 1)
    padded = np.concatenate([np.zeros((8, 29)), rows[:-1], np.zeros((8, 29))])
    for k in (0, len(win) // 2, len(win) - 1):
        np.testing.assert_allclose(win[k], padded[2 * k:2 * k + 16], atol=1e-4)
    np.testing.assert_array_equal(win[0, :8], 0)  # the zero padding before the clip


def test_deepspeech_is_deterministic(tiny_ds, jfk_16k):
    ds = tiny_ds[0]
    clip = jfk_16k[:8000]
    np.testing.assert_array_equal(ds.windows(clip), ds.windows(clip))


def test_deepspeech_load_errors(tmp_path):
    from avatar.head.eat.deepspeech import DeepSpeech
    from avatar.core.errors import WeightsError

    with pytest.raises(WeightsError, match="not found"):
        DeepSpeech.load(tmp_path / "missing.pb")
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"\x00not a graph\xff" * 10)
    with pytest.raises(WeightsError):
        DeepSpeech.load(bad)


def test_chunk_spans_cover_every_step_once():
    from avatar.head.eat.deepspeech import chunk_spans

    spans = chunk_spans(1234, chunk_steps=300, context_steps=50)
    kept = np.concatenate([np.arange(start, stop) for _, start, stop, _ in spans])
    np.testing.assert_array_equal(kept, np.arange(1234))
    assert all(lo == max(0, start - 50) and hi == min(1234, stop + 50) for lo, start, stop, hi in spans)


def test_long_input_runs_in_batched_pieces(tiny_ds, jfk_16k):
    """The tiny graph is per-step, so pieces stitched back must equal the single run exactly."""
    from avatar.head.eat.deepspeech import mfcc_input_vectors, to_int16

    ds = tiny_ds[0]
    x = mfcc_input_vectors(to_int16(jfk_16k[:16000 * 5]))  # 250 steps
    whole = ds.logits(x)
    ds.chunk_steps, ds.context_steps = 60, 7
    try:
        pieces = ds.logits(x)
    finally:
        ds.chunk_steps, ds.context_steps = 1500, 100
    assert ds._batched and pieces.shape == whole.shape == (250, 29)
    np.testing.assert_allclose(pieces, whole, atol=1e-6)


def test_fixed_batch_graph_falls_back_to_one_run(tmp_path, jfk_16k):
    from avatar.head.eat.deepspeech import DeepSpeech, mfcc_input_vectors, to_int16

    write_tiny_deepspeech(tmp_path / "b1.pb", batch=1)
    ds = DeepSpeech.load(tmp_path / "b1.pb", chunk_steps=60, context_steps=7)
    x = mfcc_input_vectors(to_int16(jfk_16k[:16000 * 3]))
    out = ds.logits(x)
    assert not ds._batched and out.shape == (len(x), 29)
