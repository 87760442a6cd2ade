"""The "eat" engine end to end on CPU with seeded (random) weights in the official file layout, a tiny frozen
DeepSpeech graph in the official v0.1.0 layout and real speech. The generator costs ~1.2 TFLOP per frame, so clips are a few frames long."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from avatar.core.errors import AvatarError
import torch

from avatar.core.config import AvatarConfig
from avatar.core.media import load_audio
from avatar.head.poses import load_pose, still_pose
from avatar.head import n_frames
from avatar.core.types import Audio

from tests.head.deepspeech_graphs import write_official_deepspeech

SHARED = Path(__file__).resolve().parents[3] / "shared"
JFK = SHARED / "fixtures" / "speech" / "jfk.flac"


def _write_eat_dir(root: Path) -> None:
    """Seeded EAT weights saved like the authors' release (ckpt/, expPCAnorm_fin/, pad.npy, DeepSpeech .pb)."""
    sys.path.insert(0, str(SHARED / "tools"))
    from seeded_weights import seeded_state_dict, split_eat

    from avatar.head.eat.deepspeech import DEEPSPEECH_FILE

    parts = split_eat(seeded_state_dict(SHARED / "reference" / "eat.tsv", 1234))
    (root / "ckpt").mkdir(parents=True)
    main = {k: parts[k] for k in ("generator", "kp_detector", "audio2kptransformer", "sidetuning", "emotionprompt")}
    torch.save({**main, "epoch": 313}, root / "ckpt" / "deepprompt_eam3d_all_final_313.pth.tar")
    torch.save({"he_estimator": parts["he_estimator"], "kp_detector": parts["kp_detector"]},
               root / "ckpt" / "pretrain_new_274.pth.tar")
    del parts, main
    rng = np.random.default_rng(5)
    (root / "expPCAnorm_fin").mkdir()
    np.save(root / "expPCAnorm_fin" / "U_mead.npy", np.linalg.qr(rng.standard_normal((45, 45)))[0].astype(np.float32))
    np.save(root / "expPCAnorm_fin" / "mean_mead.npy", (0.05 * rng.standard_normal(45)).astype(np.float32))
    pad = np.empty(2, dtype=object)
    pad[0] = torch.from_numpy((rng.standard_normal(80) - 3).astype(np.float32))
    pad[1] = (-6.5 + rng.standard_normal((16, 29))).astype(np.float32)
    np.save(root / "pad.npy", pad, allow_pickle=True)
    write_official_deepspeech(root / DEEPSPEECH_FILE)  # tiny (16 units), in the official layout: both loaders read it


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    if not (SHARED / "reference" / "eat.tsv").is_file():
        pytest.skip("shared/reference/eat.tsv not found")
    root = tmp_path_factory.mktemp("weights")
    _write_eat_dir(root / "eat")
    return root


@pytest.fixture(scope="module")
def cfg(weights_dir) -> AvatarConfig:
    return AvatarConfig(weights_dir=str(weights_dir), device="cpu").replace(**{"head.batch_size": 1})


@pytest.fixture(scope="module")
def engine(cfg):
    from avatar.head.eat.engine import EatEngine

    torch.set_num_threads(2)
    return EatEngine.load(cfg)


@pytest.fixture(scope="module")
def face(engine):
    from skimage import data

    return engine.prepare(data.astronaut())


def _speech(duration_s: float) -> Audio:
    audio = load_audio(JFK, 16000)
    start = int(1.0 * 16000)  # inside "And so my fellow Americans"
    return Audio(audio.samples[start:start + int(round(duration_s * 16000))].copy(), 16000)


def test_compiled_renderer_warms_up_with_one_full_batch(engine):
    """With compile the generator graph is built at start-up: one batch of batch_size frames from a blank source."""
    renderer = engine.renderer
    seen = []
    original, renderer._render = renderer._render, (lambda feat, kp_s, kp_d: seen.append(tuple(kp_d.shape)))
    try:
        renderer.warm_up()
        assert seen == []  # not compiled: nothing to build
        renderer.compiled = True
        renderer.warm_up()
    finally:
        renderer._render, renderer.compiled = original, False
    assert seen == [(renderer.batch_size, 15, 3)]


def test_prepare_crop_and_cached_latents(face):
    assert face.crop.shape == (256, 256, 3) and face.crop.dtype == np.uint8
    lat = face.cache["eat_latent"]
    assert lat["kp_canonical"].shape == (1, 15, 3) and lat["he_source"]["yaw"].shape == (1, 66)
    assert lat["source_area"] > 0


def test_source_state_matches_runtime_prepare(engine, face):
    """Both go through EatRenderer.clip_state: what this checks is that the engine's prompts (emotion index, seeded
    z) and its cached latents equal what prepare() computes from the same crop."""
    from avatar.head.eat.engine import seeded_z

    ours = engine.source_state(face, "happy")
    ref = engine.renderer.prepare(face.cache["eat_source"], 4, seeded_z(engine.cfg.head.seed))
    for name in ("emoprompt", "deepprompt", "face", "sidetuning_out", "feature_3d", "kp_source"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), rtol=0, atol=1e-6)


@pytest.mark.parametrize("duration_s", [0.2, 0.22, 0.46, 1.02, 2.5])
def test_feature_streams_cover_n_frames(engine, face, duration_s):
    """Mel has >= n columns, DeepSpeech n or n-1 windows (odd number of 20 ms steps); pads cover the rest."""
    from avatar.head.eat.engine import driving_pose

    speech = _speech(duration_s)
    n = n_frames(speech.duration_s)
    he = face.cache["eat_latent"]["he_source"]
    streams = engine.feature_streams(speech, driving_pose(he, load_pose("talking", n), n))
    assert streams.n_frames == n and streams.mel.shape[1] >= n and len(streams.deep) in (n - 1, n)
    w = streams.windows(max(0, n - 3), n)
    assert w["mel"].shape == (1, min(3, n), 1, 80, 11) and w["deep"].shape == (1, min(3, n), 11, 16, 29)


def test_deepspeech_port_gives_the_engine_the_same_windows(engine, face, cfg):
    """[head] deepspeech: auto runs TensorFlow on this CPU; "torch" loads the port of the same graph, whose DeepSpeech
    windows equal TensorFlow's (float32 rounding)."""
    from avatar.head.eat.deepspeech import DEEPSPEECH_FILE, DeepSpeech
    from avatar.head.eat.deepspeech_torch import TorchDeepSpeech
    from avatar.head.eat.engine import driving_pose, load_deepspeech

    assert isinstance(engine.deepspeech, DeepSpeech)
    port = load_deepspeech(cfg.weights_path(cfg.head.eat_dir) / DEEPSPEECH_FILE, "torch", torch.device("cpu"))
    assert isinstance(port, TorchDeepSpeech)
    speech = _speech(1.02)
    n = n_frames(speech.duration_s)
    pose = driving_pose(face.cache["eat_latent"]["he_source"], load_pose("talking", n), n)
    ours = engine.feature_streams(speech, pose)
    engine.deepspeech, tf_runner = port, engine.deepspeech
    try:
        theirs = engine.feature_streams(speech, pose)
    finally:
        engine.deepspeech = tf_runner
    assert ours.deep.shape == theirs.deep.shape and np.abs(ours.deep).max() > 1
    np.testing.assert_allclose(theirs.deep, ours.deep, rtol=1e-5, atol=2e-5)


def test_keypoints_cover_exactly_n_frames(engine, face):
    """0.22 s: 6 frames, 11 DeepSpeech steps -> 5 windows; the last frame runs on the pads."""
    from avatar.head.eat.engine import _pose_tensors, driving_pose

    speech = _speech(0.22)
    n = n_frames(speech.duration_s)
    state = engine.source_state(face, "neutral")
    streams = engine.feature_streams(speech, driving_pose(state.he_source, load_pose("talking", n), n))
    assert n == 6 and len(streams.deep) == 5
    w = streams.windows(0, n)
    kp = engine.renderer.driving_keypoints(state, _pose_tensors(streams.pose), n,
                                           lambda a, b: (torch.from_numpy(w["mel"][0, a:b]),
                                                         torch.from_numpy(w["pose"][a:b]),
                                                         torch.from_numpy(w["deep"][0, a:b])))
    assert kp.shape == (n, 15, 3) and torch.isfinite(kp).all()
    # frames are independent in audio2kp: the engine's larger chunks (head.batch_size) give the demo's result
    assert engine.renderer.a2kp_batch == 5  # here: chunks of 5 + 1 frames, as the official demo
    engine.renderer.a2kp_batch = 6
    try:
        one_chunk = engine.renderer.driving_keypoints(state, _pose_tensors(streams.pose), n,
                                                      lambda a, b: (torch.from_numpy(w["mel"][0, a:b]),
                                                                    torch.from_numpy(w["pose"][a:b]),
                                                                    torch.from_numpy(w["deep"][0, a:b])))
    finally:
        engine.renderer.a2kp_batch = 5
    torch.testing.assert_close(one_chunk, kp, rtol=0, atol=1e-5)


def test_intensity_blends_prompts_towards_neutral(engine):
    happy, neutral = engine.prompts("happy"), engine.prompts("neutral")
    assert (happy[0] - neutral[0]).abs().max() > 1e-3
    zero, half = engine.prompts("happy", 0.0), engine.prompts("happy", 0.5)
    torch.testing.assert_close(zero[0], neutral[0])
    torch.testing.assert_close(zero[1], neutral[1])
    torch.testing.assert_close(half[0], (happy[0] + neutral[0]) / 2)


def test_driving_pose_is_photo_pose_plus_offsets(face):
    from avatar.head.eat.engine import driving_pose
    from avatar.head.eat.prep import logits_to_degrees

    he = face.cache["eat_latent"]["he_source"]
    still = driving_pose(he, still_pose(3), 3)
    for k in ("yaw", "pitch", "roll"):
        np.testing.assert_allclose(logits_to_degrees(getattr(still, k)), logits_to_degrees(he[k].numpy()).repeat(3),
                                   atol=2e-3)
    seq = load_pose("talking", 5)
    moved = driving_pose(he, seq, 5)
    np.testing.assert_allclose(logits_to_degrees(moved.yaw) - logits_to_degrees(he["yaw"].numpy()),
                               seq.angles_deg[:, 0], atol=2e-3)
    np.testing.assert_allclose(moved.t - he["t"].numpy(), seq.translation, atol=1e-6)


CLIP_S = 0.08  # 2 frames: the generator costs ~1.2 TFLOP per frame


@pytest.fixture(scope="module")
def clip_happy(engine, face):
    speech = _speech(CLIP_S)
    return list(engine.frames(face, speech, "happy", load_pose("talking", n_frames(speech.duration_s))))


@pytest.mark.slow
def test_frames_count_shape_dtype(clip_happy):
    assert [b.shape for b in clip_happy] == [(1, 256, 256, 3), (1, 256, 256, 3)]  # batch_size 1, 2 frames
    frames = np.concatenate(clip_happy)
    assert len(frames) == n_frames(CLIP_S) == 2 and frames.dtype == np.uint8
    assert frames.std() > 5  # random-weight output with structure, not a flat image


@pytest.mark.slow
def test_frames_repeatable_and_emotion_changes_them(engine, face, clip_happy):
    speech = _speech(CLIP_S)
    pose = load_pose("talking", n_frames(speech.duration_s))
    again = next(iter(engine.frames(face, speech, "happy", pose)))
    np.testing.assert_array_equal(again, clip_happy[0])
    sad = next(iter(engine.frames(face, speech, "sad", pose)))
    assert np.abs(sad.astype(int) - clip_happy[0].astype(int)).max() > 10


def test_missing_files_are_listed(cfg, weights_dir, tmp_path):
    from avatar.head.eat.engine import eat_missing_files

    assert eat_missing_files(cfg) == []
    partial = tmp_path / "eat"
    shutil.copytree(weights_dir / "eat" / "expPCAnorm_fin", partial / "expPCAnorm_fin")
    missing = eat_missing_files(AvatarConfig(weights_dir=str(tmp_path)))
    names = sorted(p.name for p in missing)
    assert names == sorted(["deepprompt_eam3d_all_final_313.pth.tar", "pretrain_new_274.pth.tar", "pad.npy",
                            "deepspeech-0_1_0-b90017e8.pb"])


def test_load_head_falls_back_with_reason(tmp_path):
    pytest.importorskip("avatar.head.lite")
    from avatar.head import load_head

    head = load_head(AvatarConfig(weights_dir=str(tmp_path), device="cpu"))
    assert head.name == "lite"
    assert "EAT weights missing (6 files" in head.fallback_reason
    assert "deepprompt_eam3d_all_final_313.pth.tar" in head.fallback_reason


def test_device_and_dtype_resolution():
    from avatar.head.eat.engine import resolve_device, resolve_dtype

    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("float16", torch.device("cpu")) == torch.float16
    with pytest.raises(AvatarError):
        resolve_dtype("int8", torch.device("cpu"))
