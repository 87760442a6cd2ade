"""Face-enhancement stage on a real portrait (skimage astronaut): detection, alignment, paste-back, engines, loading."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data

from avatar.core import media
from avatar.core.config import AvatarConfig
from avatar.enhance import FACE_SIZE, Enhancer, FivePointDetector, align_faces, paste_faces
from avatar.enhance.gfpgan import TorchRunner, build_gfpgan
from avatar.core.errors import AudioTooLong, BackendUnavailable, NoFaceFound
from models.gfpgan import GFPGANConfig, GFPGANv1Clean

SHARED = Path(__file__).resolve().parents[3] / "shared"
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
NARROW = GFPGANConfig(narrow=0.25)  # 512 px in and out like v1.4, ~1/16 of its FLOPs


def _narrow_net() -> GFPGANv1Clean:
    from tests.enhance.test_gfpgan import _random_state

    return build_gfpgan(_random_state(NARROW), NARROW)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return data.astronaut()  # 512x512 RGB, one face around (225, 125)


@pytest.fixture(scope="module")
def points(photo) -> np.ndarray:
    return FivePointDetector()(photo)


@pytest.fixture(scope="module")
def seeded_enhancer() -> Enhancer:
    sys.path.insert(0, str(SHARED / "tools"))
    from seeded_weights import seeded_state_dict

    return Enhancer.from_network(build_gfpgan(seeded_state_dict(str(SHARED / "reference" / "gfpgan_v1.4.tsv"), 1234)))


@pytest.fixture(scope="module")
def narrow_enhancer() -> Enhancer:
    return Enhancer.from_network(_narrow_net(), batch_size=2)


def test_detector_finds_the_astronaut_points(points):
    assert points.shape == (1, 5, 2)
    left_eye, right_eye, nose, mouth_l, mouth_r = points[0]
    assert 180 < left_eye[0] < right_eye[0] < 280 and 80 < left_eye[1] < 130  # eyes left-to-right, upper face
    assert left_eye[1] < nose[1] < mouth_l[1] and mouth_l[0] < mouth_r[0]


def test_alignment_puts_points_on_the_template(photo, points):
    crops, affines = align_faces(photo, points)
    assert crops.shape == (1, FACE_SIZE, FACE_SIZE, 3) and crops.dtype == np.uint8
    from avatar.enhance.base import TEMPLATE_512

    mapped = np.c_[points[0], np.ones(5)] @ affines[0].T
    assert np.abs(mapped - TEMPLATE_512).max() < 25  # a similarity fit of 5 points: close, not exact


def test_paste_back_of_unchanged_crop_restores_the_photo(photo, points):
    crops, affines = align_faces(photo, points)
    out = paste_faces(photo, crops, affines)
    diff = np.abs(out.astype(int) - photo.astype(int))
    assert diff[90:170, 190:260].mean() < 3.0  # only resampling error inside the face
    assert diff[300:].max() == 0 and diff[:, 350:].max() == 0


def test_enhance_image_with_seeded_gfpgan(photo, seeded_enhancer):
    out = seeded_enhancer.enhance_image(photo)
    assert out.shape == photo.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - photo.astype(int))
    assert diff[320:].max() == 0 and diff[:, 360:].max() == 0 and diff[:, :120].max() == 0  # far from the face
    assert diff[95:160, 195:255].mean() > 10  # the face itself was replaced by the network's output


def test_enhance_image_with_given_points_and_without_faces(photo, points, narrow_enhancer):
    out = narrow_enhancer.enhance_image(photo, points5=points)
    assert out.shape == photo.shape and np.abs(out.astype(int) - photo.astype(int))[95:160, 195:255].mean() > 1
    assert np.array_equal(narrow_enhancer.enhance_image(photo, points5=np.zeros((0, 5, 2))), photo)
    with pytest.raises(NoFaceFound):
        narrow_enhancer.enhance_image(np.full((256, 256, 3), 128, np.uint8))


def test_enhance_faces_on_256_crops(photo, points, narrow_enhancer):
    crops, _ = align_faces(photo, points)
    small = np.stack([crops[0, ::2, ::2], crops[0, ::2, ::2][:, ::-1], np.full((256, 256, 3), 90, np.uint8)])
    out = narrow_enhancer.enhance_faces(small)  # 3 faces, batch_size 2: two network calls
    assert out.shape == (3, 512, 512, 3) and out.dtype == np.uint8
    assert not np.array_equal(out[0], out[1])
    direct = narrow_enhancer.enhance_faces(crops)
    assert direct.shape == (1, 512, 512, 3)


def test_load_without_weights_is_off(tmp_path):
    cfg = AvatarConfig(weights_dir=str(tmp_path), device="cpu")
    enhancer = Enhancer.load(cfg)
    assert enhancer.backend == "off" and "GFPGANv1.4.pth" in enhancer.fallback_reason
    with pytest.raises(BackendUnavailable, match="not found"):
        enhancer.enhance_faces(np.zeros((1, 512, 512, 3), np.uint8))
    asked = Enhancer.load(cfg.replace(**{"enhance.backend": "gfpgan"}))  # falls back like the other stages
    assert asked.backend == "off" and "not found" in asked.fallback_reason
    assert Enhancer.load(cfg.replace(**{"enhance.backend": "off"})).backend == "off"


def test_load_picks_onnx_engine_and_matches_torch(tmp_path, photo, points, narrow_enhancer):
    from engines.gfpgan_onnx import export_onnx

    net = narrow_enhancer.runner.net
    export_onnx(net, tmp_path / "gfpgan" / "GFPGANv1.4.onnx")
    enhancer = Enhancer.load(AvatarConfig(weights_dir=str(tmp_path), device="cpu"))
    assert (enhancer.backend, enhancer.engine) == ("gfpgan", "onnx")
    crops, _ = align_faces(photo, points)
    a = enhancer.enhance_faces(crops).astype(int)
    b = narrow_enhancer.enhance_faces(crops).astype(int)
    assert np.abs(a - b).max() <= 2  # uint8 rounding of nearly equal floats


def test_load_torch_engine_from_checkpoint(tmp_path):
    net = GFPGANv1Clean()
    (tmp_path / "gfpgan").mkdir()
    torch.save({"params_ema": net.state_dict()}, tmp_path / "gfpgan" / "GFPGANv1.4.pth")
    enhancer = Enhancer.load(AvatarConfig(weights_dir=str(tmp_path), device="cpu"))
    assert (enhancer.backend, enhancer.engine, enhancer.device) == ("gfpgan", "torch", "cpu")
    assert enhancer.runner.dtype == torch.float32


def test_enhance_video_streams_frames(tmp_path, photo, narrow_enhancer):
    frames = np.stack([photo, np.roll(photo, 6, axis=1), np.roll(photo, 12, axis=1)])
    src = media.write_video(tmp_path / "in.mp4", [frames])
    reports = []
    out = dataclasses.replace(narrow_enhancer, batch_size=2).enhance_video(src, tmp_path / "out.mp4",
                                                                           progress=lambda *r: reports.append(r))
    info = media.probe(out)
    assert info.n_frames == 3 and (info.width, info.height) == (512, 512)
    assert reports == [(2 / 3, "enhanced 2/3 frames"), (0.99, "enhanced 3/3 frames")]  # 1.0 once the file is written
    decoded = np.concatenate(list(media.read_video(out)))
    original = np.concatenate(list(media.read_video(src)))
    diff = np.abs(decoded.astype(int) - original.astype(int))
    assert diff[:, 95:160, 200:260].mean() > 1 and diff[:, 400:, :100].mean() < 2  # face changed, corner kept

    assert media.probe(src, decode=False).tbr == 25  # the decoder's rate, the one the output is written at
    with pytest.raises(AudioTooLong, match="longer than 0.05 s"):  # counted while reading: no header needed
        narrow_enhancer.enhance_video(src, tmp_path / "cut.mp4", max_s=0.05)
    assert not (tmp_path / "cut.mp4").exists()


@pytest.mark.gpu
@NEEDS_CUDA
def test_gpu_fp16_enhancer_matches_cpu(photo, seeded_enhancer):
    crops = np.stack([photo, photo[:, ::-1]])  # any 512 images will do for fp16-vs-fp32 (no detector needed)
    cpu = seeded_enhancer.enhance_faces(crops).astype(int)
    net = seeded_enhancer.runner.net
    gpu = Enhancer.from_network(net, "cuda", torch.float16).enhance_faces(crops).astype(int)
    seeded_enhancer.runner.net.float().cpu()  # TorchRunner moved the shared module: put it back for other tests
    diff = np.abs(gpu - cpu)
    print(f"fp16 CUDA vs fp32 CPU: mean {diff.mean():.3f}, max {diff.max()} (uint8 levels)")
    assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 8


@pytest.mark.gpu
@NEEDS_CUDA
def test_gpu_compiled_runner_pads_short_batches_and_matches_eager(photo, seeded_enhancer):
    """compile=True: one graph for batch_size faces; a shorter call is padded and cut back, same pixels as eager."""
    import copy

    net = copy.deepcopy(seeded_enhancer.runner.net)
    crops = np.stack([photo, photo[:, ::-1], photo[::-1]])  # 3 faces through a graph built for 4
    eager = Enhancer.from_network(copy.deepcopy(net), "cuda", torch.float16, batch_size=4).enhance_faces(crops)
    runner = TorchRunner(net, "cuda", torch.float16, batch_size=4, compile=True)
    compiled = Enhancer("gfpgan", "torch", "cuda", 4, runner=runner).enhance_faces(crops)
    assert compiled.shape == eager.shape == (3, 512, 512, 3)
    diff = np.abs(compiled.astype(int) - eager.astype(int))
    print(f"compiled vs eager fp16: mean {diff.mean():.3f}, max {diff.max()} (uint8 levels)")
    assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 3


def test_fixed_batch_runner_warms_up_with_one_full_batch():
    """A compiled (fixed-batch) runner builds its graph at start-up: one padded batch of batch_size faces."""
    runner = TorchRunner(_narrow_net(), "cpu", torch.float32, batch_size=3)
    seen = []
    runner._fn = lambda x: seen.append(tuple(x.shape)) or x
    runner.warm_up()
    assert seen == []  # eager: nothing to compile
    runner.fixed_batch = True
    runner.warm_up()
    assert seen == [(3, 3, NARROW.out_size, NARROW.out_size)]

    def out_of_memory(x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    runner._fn = out_of_memory
    with pytest.raises(BackendUnavailable, match="lower \\[enhance\\] batch_size"):
        runner.warm_up()


def test_doctor_counts_an_exported_gfpgan_only_where_the_enhancer_would_run_it(tmp_path):
    """A TensorRT engine needs CUDA and tensorrt: on this CPU machine it does not make enhancement ready; an ONNX
    file does (onnxruntime runs it on the CPU), as Enhancer.load would decide."""
    from avatar.weights.doctor import doctor_report

    cfg = AvatarConfig(weights_dir=str(tmp_path), device="cpu")
    engine_file = cfg.weights_path(cfg.enhance.tensorrt_path)
    engine_file.parent.mkdir(parents=True)
    engine_file.write_bytes(b"not used")
    assert doctor_report(cfg, probe_servers=False)["original_ready"]["enhance"] is False
    cfg.weights_path(cfg.enhance.onnx_path).write_bytes(b"not parsed by the doctor")
    assert doctor_report(cfg, probe_servers=False)["original_ready"]["enhance"] is True


def test_the_compiled_gfpgan_sees_one_dispatch_key_set_in_warm_up_and_in_use():
    """torch.compile guards on each input's dispatch keys: the warm-up's blank batch (made outside inference mode)
    and a real batch (made inside it, as the render path does) once reached it with different sets, and GFPGAN
    recompiled (seen in the ray-mode run on the H200 under TORCH_LOGS=recompiles)."""
    runner = TorchRunner(_narrow_net(), "cpu", torch.float32, batch_size=2)
    keys = []

    def spy(x):
        keys.append(torch._C._dispatch_keys(x))
        return x

    runner.fixed_batch, runner._fn = True, spy  # the compiled path's shapes without compiling
    runner.warm_up()
    with torch.inference_mode():
        runner(torch.zeros(2, 3, 512, 512))
    runner(torch.zeros(1, 3, 512, 512).requires_grad_(False))
    assert len(keys) == 3 and keys[1] == keys[0] and keys[2] == keys[0], keys
