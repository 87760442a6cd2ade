"""EAT networks: key/shape manifest, the checkpoint loader, and numerical parity with the official code.

Parity data: shared/reference/eat_parity.npz (official code, seeded weights "seeded-v1" seed 1234, CPU fp32);
tolerances from shared/reference/README.md. The weights are written as the official files into a tmp eat_dir
and read back through avatar.head.eat.runtime.load_eat_networks.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar.core.errors import WeightsError
from avatar.head.eat.runtime import EatFrameInputs, EatRenderer, frames_to_uint8, load_eat_networks, load_pad, missing_eat_files, window_chunk
from models.eat import PART_CLASSES
from models.eat.blocks import planar_conv3d
from models.eat.dense_motion import DenseMotionConfig, DenseMotionNetwork
from models.eat.spade import SPADE, upsampled_conv3x3
from tests.triton_interpreter import interpreted_error

SHARED = Path(__file__).resolve().parents[3] / "shared"
REF = SHARED / "reference"
pytestmark = pytest.mark.skipif(not (REF / "eat_parity.npz").is_file(), reason="shared reference data missing")

HEAD = ("yaw", "pitch", "roll", "t")
EMOTIONS = ("emo0", "emo1")


def _manifest() -> dict[str, dict[str, tuple[int, ...]]]:
    parts: dict[str, dict[str, tuple[int, ...]]] = {}
    for line in (REF / "eat.tsv").read_text().splitlines():
        key, shape, _ = line.split("\t")
        part, _, rest = key.partition(".")
        parts.setdefault(part, {})[rest] = tuple(int(s) for s in shape.split(",")) if shape else ()
    return parts


def _close(name: str, got: torch.Tensor | float, ref: np.ndarray, max_abs: float, mean_abs: float | None = None):
    got_np = np.asarray(torch.as_tensor(got).detach().float().cpu().numpy(), dtype=np.float32).reshape(ref.shape)
    diff = np.abs(got_np - ref)
    assert np.isfinite(got_np).all(), f"{name}: non-finite values"
    assert diff.max() < max_abs, f"{name}: max |diff| {diff.max():.3g} >= {max_abs}"
    if mean_abs is not None:
        assert diff.mean() < mean_abs, f"{name}: mean |diff| {diff.mean():.3g} >= {mean_abs}"


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(REF / "eat_parity.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def seeded_parts() -> dict[str, dict[str, torch.Tensor]]:
    sys.path.insert(0, str(SHARED / "tools"))
    from seeded_weights import seeded_state_dict, split_eat

    return split_eat(seeded_state_dict(REF / "eat.tsv", 1234))


def _write_eat_dir(root: Path, parts: dict, ref: dict[str, np.ndarray]) -> Path:
    """The official file layout: two .pth.tar dicts, the PCA .npy files and a pickled pad.npy."""
    (root / "ckpt").mkdir(parents=True)
    (root / "expPCAnorm_fin").mkdir()
    main = {p: parts[p] for p in ("generator", "kp_detector", "audio2kptransformer", "sidetuning", "emotionprompt")}
    main.update({"optimizer_generator": {"state": {}, "param_groups": [{"lr": 2e-4, "params": [0, 1]}]},
                 "epoch": 313})
    torch.save(main, root / "ckpt/deepprompt_eam3d_all_final_313.pth.tar")
    torch.save({"kp_detector": parts["kp_detector"], "he_estimator": parts["he_estimator"]},
               root / "ckpt/pretrain_new_274.pth.tar")
    u = np.zeros((45, 45), np.float32)  # the npz keeps only the 32 columns that are used
    u[:, :32] = ref["const_expU32"]
    u[:, 32:] = 7.0  # must be ignored
    np.save(root / "expPCAnorm_fin/U_mead.npy", u)
    np.save(root / "expPCAnorm_fin/mean_mead.npy", ref["const_expmean"])
    pad = np.empty(2, dtype=object)
    pad[0] = torch.from_numpy(ref["prep_pad_mel"].copy())  # a torch.FloatTensor, as in the official file
    pad[1] = ref["prep_pad_deep"]
    np.save(root / "pad.npy", pad, allow_pickle=True)
    return root


@pytest.fixture(scope="module")
def eat_dir(tmp_path_factory, seeded_parts, ref) -> Path:
    return _write_eat_dir(tmp_path_factory.mktemp("eat"), seeded_parts, ref)


@pytest.fixture(scope="module")
def renderer(eat_dir) -> EatRenderer:
    torch.manual_seed(0)
    return EatRenderer(load_eat_networks(eat_dir), batch_size=4)


@pytest.fixture(scope="module")
def he_driving(ref) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(ref[f"in_he_driving_{k}"][0]) for k in HEAD}


@pytest.fixture(scope="module")
def states(renderer, ref) -> dict:
    src = torch.from_numpy(ref["source_image"])
    z = torch.from_numpy(ref["in_z_trg"])
    return {e: renderer.prepare(src, int(ref[f"{e}_y_trg"][0]), z) for e in EMOTIONS}


def _ref_windows(ref):
    def windows(a: int, b: int):
        return (torch.from_numpy(ref["in_mel"][0, a:b]), torch.from_numpy(ref["in_pose"][a:b]),
                torch.from_numpy(ref["in_deep"][0, a:b]))
    return windows


@pytest.fixture(scope="module")
def kp_driving(renderer, states, he_driving, ref) -> dict[str, torch.Tensor]:
    n = ref["in_pose"].shape[0]
    return {e: renderer.driving_keypoints(states[e], he_driving, n, _ref_windows(ref)) for e in EMOTIONS}


# ------------------------------------------------------------------------------------------ structure
@pytest.mark.parametrize("part", sorted(PART_CLASSES))
def test_state_dict_keys_and_shapes_match_manifest(part):
    own = {k: tuple(v.shape) for k, v in PART_CLASSES[part]().state_dict().items()}
    want = _manifest()[part]
    assert set(own) == set(want), (sorted(set(want) - set(own))[:10], sorted(set(own) - set(want))[:10])
    assert {k: s for k, s in own.items() if s != want[k]} == {}


def test_missing_files_are_reported(tmp_path):
    assert len(missing_eat_files(tmp_path)) == 5
    with pytest.raises(WeightsError, match="pad.npy"):
        load_eat_networks(tmp_path)


def test_loader_lists_missing_and_unexpected_keys(tmp_path, seeded_parts, ref):
    parts = dict(seeded_parts)
    side = dict(parts["sidetuning"])
    side.pop("emokp.bias")
    side["bogus.weight"] = torch.zeros(1)
    parts["sidetuning"] = side
    root = _write_eat_dir(tmp_path / "eat", parts, ref)
    with pytest.raises(WeightsError) as err:
        load_eat_networks(root)
    assert "emokp.bias" in str(err.value) and "bogus.weight" in str(err.value) and "sidetuning" in str(err.value)


def test_pad_loader_refuses_foreign_pickles(tmp_path):
    pad = np.empty(2, dtype=object)
    pad[0], pad[1] = print, np.zeros((16, 29), np.float32)  # a callable: must not be unpickled
    np.save(tmp_path / "pad.npy", pad, allow_pickle=True)
    with pytest.raises(Exception, match="refusing"):
        load_pad(tmp_path / "pad.npy")


def test_window_assembly_matches_demo(ref):
    inputs = EatFrameInputs(*(torch.from_numpy(ref[k]) for k in
                              ("prep_mel_full", "prep_poseimg", "prep_deepfeature", "prep_pad_mel", "prep_pad_deep")))
    mel, pose, deep = window_chunk(inputs, 0, inputs.num_frames)
    assert torch.equal(mel, torch.from_numpy(ref["in_mel"][0]))
    assert torch.equal(pose, torch.from_numpy(ref["in_pose"]))
    assert torch.equal(deep, torch.from_numpy(ref["in_deep"][0]))


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_polyphase_upsampled_conv_equals_upsample_then_conv(scale, layout):
    g = torch.Generator().manual_seed(scale)
    seg, w, b = torch.randn(2, 5, 6, 7, generator=g), torch.randn(3, 5, 3, 3, generator=g), torch.randn(3, generator=g)
    seg = seg.contiguous(memory_format=layout)
    want = torch.nn.functional.conv2d(torch.nn.functional.interpolate(seg, scale_factor=scale, mode="nearest"),
                                      w, b, padding=1)
    got = upsampled_conv3x3(seg, w, b, scale)
    assert got.shape == want.shape and got.is_contiguous(memory_format=layout)
    assert (got - want).abs().max() < 2e-5


GATHER_KERNEL_CHECK = """
import torch
from models.eat.spade import _gather_torch, _phase_tables
from models.eat.spade_triton import phase_gather
g = torch.Generator().manual_seed(0)
worst = 0.0
for scale, b, c, h, w in ((2, 1, 3, 1, 1), (4, 2, 17, 3, 5), (3, 1, 20, 4, 2)):
    rows, group, offset = _phase_tables(scale, torch.device("cpu"))
    u = len(rows)
    z = torch.randn(b, u * u * c, h + 1, w + 1, generator=g).contiguous(memory_format=torch.channels_last)
    bias = torch.randn(c, generator=g)
    for relu in (False, True):
        got, want = phase_gather(z, bias, offset, group, u, relu), _gather_torch(z, bias, offset, group, u, relu)
        assert got.shape == want.shape, (got.shape, want.shape)
        worst = max(worst, float((got - want).abs().max()))
print(worst)
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed (CUDA machines)")
def test_phase_gather_kernel_equals_torch_form_in_the_triton_interpreter():
    """The CUDA gather of the polyphase SPADE conv, run by triton's CPU interpreter against the torch form."""
    assert interpreted_error(GATHER_KERNEL_CHECK) < 1e-6


def test_fast_spade_equals_reference():
    torch.manual_seed(0)
    layer = SPADE(8, 5).eval()
    x, seg = torch.randn(2, 8, 24, 28), torch.randn(2, 5, 6, 7)
    with torch.inference_mode():
        want = layer(x, seg)
        layer.fast = True
        got = layer(x, seg)
    assert (got - want).abs().max() < 1e-5


@pytest.mark.parametrize("k,layout", [(3, torch.contiguous_format), (7, torch.channels_last_3d)])
def test_planar_conv3d_equals_conv3d(k, layout):
    torch.manual_seed(k)
    conv = torch.nn.Conv3d(6, 5, k, padding=k // 2).to(memory_format=layout)
    x = torch.randn(2, 6, 9, 10, 11).contiguous(memory_format=layout)
    with torch.inference_mode():
        want, got = conv(x), planar_conv3d(conv, x)
    assert got.shape == want.shape
    assert (got - want).abs().max() < 1e-5


def test_fast_dense_motion_equals_reference():
    """Planar mask + occlusion conv and planar up-convs: same mask, deformation and occlusion as the 3-D convs."""
    torch.manual_seed(0)
    cfg = DenseMotionConfig(block_expansion=4, max_features=16, num_blocks=3, num_kp=3, feature_channel=4)
    net = DenseMotionNetwork(cfg).eval()
    for p in net.parameters():  # random BN statistics too, so every term matters
        p.data.normal_(0, 0.1)
    feature, kp_src = torch.randn(1, 4, 16, 16, 16), 0.5 * torch.rand(1, 3, 3) - 0.25
    kp_drv = kp_src + 0.05 * torch.randn(2, 3, 3)
    with torch.inference_mode():
        want = net(feature, kp_drv, kp_src)
        net.set_fast(True)
        got = net(feature, kp_drv, kp_src)
    for key in ("mask", "deformation", "occlusion_map"):  # fp32 rounding only: 1e-5 of the largest value
        assert (got[key] - want[key]).abs().max() < 1e-5 * max(1.0, want[key].abs().max().item()), key
    assert (want["occlusion_map"] - want["occlusion_map"].mean()).abs().max() > 1e-3  # not a constant map


# ------------------------------------------------------------------------------------------ parity
def test_source_latent_parity(renderer, ref):
    lat = renderer.source_latent(torch.from_numpy(ref["source_image"]))
    for k in ("yaw", "pitch", "roll", "t", "exp"):
        _close(f"he_source_{k}", lat["he_source"][k], ref[f"he_source_{k}"], 1e-5)
    _close("kp_canonical_value", lat["kp_canonical"], ref["kp_canonical_value"], 5e-5)
    _close("kp_prediction_map_sub", lat["prediction_map"][:, :, ::4, ::4, ::4], ref["kp_prediction_map_sub"], 5e-5)
    assert abs(lat["source_area"] - float(ref["source_area"])) < 5e-5
    _close("kp_source", lat["kp_source"], ref["kp_source"], 5e-5)


@pytest.mark.parametrize("emo", EMOTIONS)
def test_prompts_and_expression_parity(renderer, states, he_driving, kp_driving, ref, emo):
    st = states[emo]
    _close(f"{emo}_emoprompt", st.emoprompt, ref[f"{emo}_emoprompt"], 1e-5)
    _close(f"{emo}_deepprompt", st.deepprompt, ref[f"{emo}_deepprompt"], 1e-5)
    n = ref["in_pose"].shape[0]
    emo_coeffs = renderer.expression_coeffs(st, *_ref_windows(ref)(0, n), he_driving)
    _close(f"{emo}_a2kp_emo", emo_coeffs, ref[f"{emo}_a2kp_emo"], 1e-5)
    _close(f"{emo}_sidetuning_out", st.sidetuning_out.expand(n, -1), ref[f"{emo}_sidetuning_out"], 1e-5)
    _close(f"{emo}_exp", renderer.expression(st, emo_coeffs), ref[f"{emo}_exp"], 5e-5)
    _close(f"{emo}_kp_driving", kp_driving[emo], ref[f"{emo}_kp_driving"], 5e-5)
    _close(f"{emo}_gen_feature_3d_sub", st.feature_3d[:, :, ::4, ::8, ::8], ref[f"{emo}_gen_feature_3d_sub"], 1e-5)


def test_emotion_label_changes_output(states, ref):
    # guards against a test that passes for any label: the stored prompts differ, and so do ours
    a, b = states["emo0"].emoprompt, states["emo1"].emoprompt
    assert (a - b).abs().max() > 1e-3


@pytest.fixture(scope="module")
def gen_out(renderer, states, kp_driving) -> dict[str, dict[str, torch.Tensor]]:
    """Generator outputs for all stored frames, one batch of 4 per emotion (~30 s per frame on 2 cores)."""
    return {e: renderer.generate(states[e], kp_driving[e]) for e in EMOTIONS}


@pytest.mark.slow
@pytest.mark.parametrize("emo", EMOTIONS)
def test_generator_frames_parity(gen_out, ref, emo):
    """All stored frames, batched (B=4): prediction, occlusion, deformation, mask; and the uint8 frames."""
    out = gen_out[emo]
    frames = ref[f"{emo}_prediction_frames"]
    _close(f"{emo}_prediction", out["prediction"][frames], ref[f"{emo}_prediction"], 1e-3, 5e-5)
    _close(f"{emo}_gen_occlusion_map", out["occlusion_map"], ref[f"{emo}_gen_occlusion_map"], 2e-4)
    _close(f"{emo}_gen_deformation_sub", out["deformation"][:, ::4, ::4, ::4, :],
           ref[f"{emo}_gen_deformation_sub"], 2e-4)
    _close(f"{emo}_gen_mask_sub", out["mask"][:, :, ::4, ::8, ::8], ref[f"{emo}_gen_mask_sub"], 2e-4)
    ref_u8 = (np.transpose(ref[f"{emo}_prediction"], (0, 2, 3, 1)) * 255).astype(np.uint8)
    got_u8 = frames_to_uint8(out["prediction"][frames])
    assert got_u8.shape == ref_u8.shape and got_u8.dtype == np.uint8
    assert np.abs(got_u8.astype(int) - ref_u8).max() <= 1  # truncation may flip at a rounding boundary


@pytest.mark.slow
def test_batched_generator_equals_per_frame(renderer, states, kp_driving, gen_out):
    st, kp = states["emo0"], kp_driving["emo0"]
    for i in (0, 3):
        single = renderer.generate(st, kp[i:i + 1])["prediction"]
        assert (gen_out["emo0"]["prediction"][i:i + 1] - single).abs().max() < 1e-5


def test_a_failed_warm_up_leaves_the_eager_networks_in_place(eat_dir, monkeypatch):
    """With compile on, a warm-up that fails (torch.compile raising at start-up) must not leave renders retrying the
    compile: the renderer falls back to the eager generator and audio2kp."""
    nets = load_eat_networks(eat_dir)
    r = EatRenderer(nets, batch_size=2, compile=True, compile_keypoints=True)
    assert r._render != nets.generator.render and r._audio2kp is not nets.audio2kp

    def broken(*_a, **_k):
        raise RuntimeError("inductor failed")

    monkeypatch.setattr(r, "prepare", broken)
    r.warm_up()
    assert r._render == nets.generator.render and r._audio2kp is nets.audio2kp
    assert not (r.compiled or r.keypoints_compiled)


def test_frame_batches_reach_the_compiled_generator_as_the_warm_up_did(eat_dir):
    """torch.compile guards on each input's dispatch keys: the warm-up's keypoints are made in inference mode, and
    a frame batch sliced from the clip's keypoints outside it (frame_batches is a lazy generator) carried another
    key set, so the first real clip recompiled the generator (seen in a ray-mode run under TORCH_LOGS=recompiles)."""
    r = EatRenderer(load_eat_networks(eat_dir), batch_size=2, compile=False)
    keys = []

    def spy(feature_3d, kp_source, kp_driving):
        keys.append(torch._C._dispatch_keys(kp_driving))
        return {"prediction": torch.zeros(kp_driving.shape[0], 3, 256, 256)}

    r.compiled, r.fixed_shapes, r._render = True, True, spy
    state = r.prepare(torch.full((1, 3, 256, 256), 0.5), 0, torch.zeros(1, 16))
    r.generate(state, state.kp_source.repeat(2, 1, 1))  # as warm_up() calls it
    kp = r.driving_keypoints(state, {k: torch.zeros(3, 66) for k in ("yaw", "pitch", "roll")} |
                             {"t": torch.zeros(3, 3)}, 3, lambda a, b: (torch.zeros(b - a, 1, 80, 11),
                                                                       torch.zeros(b - a, 11, 1, 64, 64),
                                                                       torch.zeros(b - a, 11, 16, 29)))
    assert [b.shape[0] for b in r.frame_batches(state, kp)] == [2, 1]
    assert len(keys) == 3 and keys[1] == keys[0] and keys[2] == keys[0], keys


@pytest.mark.slow
def test_render_frames_end_to_end(renderer, states, he_driving, kp_driving, ref):
    """Per-frame inputs -> windows -> keypoints -> lazily generated uint8 batches (first batch checked)."""
    inputs = EatFrameInputs(*(torch.from_numpy(ref[k]) for k in
                              ("prep_mel_full", "prep_poseimg", "prep_deepfeature", "prep_pad_mel", "prep_pad_deep")))
    kp = renderer.driving_keypoints(states["emo1"], he_driving, inputs.num_frames,
                                    lambda a, b: window_chunk(inputs, a, b))
    _close("emo1_kp_driving (frame inputs)", kp, ref["emo1_kp_driving"], 5e-5)
    renderer.batch_size = 1
    try:
        first = next(iter(renderer.render_frames(states["emo1"], he_driving, inputs)))
    finally:
        renderer.batch_size = 4
    assert first.shape == (1, 256, 256, 3)
    ref_u8 = (np.transpose(ref["emo1_prediction"][:1], (0, 2, 3, 1)) * 255).astype(np.uint8)
    assert np.abs(first.astype(int) - ref_u8).max() <= 1


# ------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_polyphase_conv_with_the_cuda_gather_kernel(dtype, layout):
    """The Triton gather on CUDA (what the compiled generator runs) against upsample-then-conv, scales 2-4,
    non-square maps, a channel count off the kernel's blocks, batch > 1, with and without the fused ReLU."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from models.eat.spade import gather_kernel

    assert gather_kernel() is not None, "triton is missing on this GPU machine"
    torch.backends.cudnn.allow_tf32 = False
    g = torch.Generator(device="cuda").manual_seed(0)
    for scale in (2, 3, 4):
        seg = torch.randn(3, 40, 9, 13, device="cuda", generator=g).contiguous(memory_format=layout)
        w, b = torch.randn(33, 40, 3, 3, device="cuda", generator=g) * 0.1, torch.randn(33, device="cuda", generator=g)
        want = torch.nn.functional.conv2d(torch.nn.functional.interpolate(seg, scale_factor=scale, mode="nearest"),
                                          w, b, padding=1)
        for relu in (False, True):
            got = upsampled_conv3x3(seg.to(dtype), w.to(dtype), b.to(dtype), scale, relu=relu).float()
            ref = torch.relu(want) if relu else want
            assert got.shape == ref.shape and got.is_contiguous(memory_format=layout)
            tol = 1e-4 if dtype == torch.float32 else 0.03 * ref.abs().max().item()
            assert (got - ref).abs().max().item() < tol, (scale, relu, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,compile,freezing,keypoints", [
    (torch.bfloat16, False, False, False), (torch.float16, False, False, False), (torch.bfloat16, True, False, False),
    (torch.bfloat16, True, True, False), (torch.bfloat16, True, False, True)],
    ids=["bf16", "fp16", "bf16-compiled", "bf16-compiled-frozen", "bf16-compiled-keypoints-compiled"])
def test_half_precision_generator_psnr(eat_dir, ref, dtype, compile, freezing, keypoints):
    """bf16/fp16 generator on CUDA vs the stored fp32 frames: PSNR >= 35 dB; also compiled as the app runs it on a
    GPU, with and without inductor's freezing (BatchNorm folded into the convs, weights as constants), and with
    audio2kp compiled too (EatRenderer(compile_keypoints=True))."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    r = EatRenderer(load_eat_networks(eat_dir, device="cuda", dtype=dtype), batch_size=4, channels_last=True,
                    compile=compile, freezing=freezing, compile_keypoints=keypoints)
    he = {k: torch.from_numpy(ref[f"in_he_driving_{k}"][0]) for k in HEAD}
    src, z = torch.from_numpy(ref["source_image"]), torch.from_numpy(ref["in_z_trg"])
    for emo in EMOTIONS:
        st = r.prepare(src, int(ref[f"{emo}_y_trg"][0]), z)
        kp = r.driving_keypoints(st, he, ref["in_pose"].shape[0], _ref_windows(ref))
        pred = r.generate(st, kp)["prediction"].float().cpu().numpy()
        mse = float(np.mean((pred - ref[f"{emo}_prediction"]) ** 2))
        psnr = 10 * np.log10(1.0 / max(mse, 1e-12))
        print(f"EAT generator {dtype} compile={compile} freezing={freezing} keypoints compiled={keypoints} "
              f"(TF32 keypoints: {r.tf32}) vs fp32 frames, {emo}: PSNR {psnr:.2f} dB (>= 35)")
        assert psnr >= 35.0, f"{emo} {dtype}: PSNR {psnr:.1f} dB"
