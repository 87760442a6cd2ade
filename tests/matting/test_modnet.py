"""MODNet backend: size rule, batching, alpha resize-back and compositing through real ONNX Runtime sessions of
models exported in the test (a tiny luminance "matting" net with a known answer, and the MODNet architecture)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data
from torch import nn

from avatar.core.errors import WeightsError
from avatar.matting.modnet import ModnetMatting, composite, modnet_size, preprocess
from models.modnet import MODNet

AXES = {"input": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 2: "height", 3: "width"}}


class Luminance(nn.Module):
    """alpha = mean(rgb) / 255, computed from the (x - 127.5) / 127.5 input: a matte with a known value."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1, keepdim=True) * 0.5 + 0.5


def _export(net: nn.Module, path: Path, dynamic_batch: bool = True, size: int = 64) -> Path:
    axes = AXES if dynamic_batch else {k: {2: "height", 3: "width"} for k in AXES}
    torch.onnx.export(net.eval(), (torch.zeros(1, 3, size, size),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"], dynamic_axes=axes)
    return path


@pytest.fixture(scope="module")
def luminance_onnx(tmp_path_factory) -> Path:
    return _export(Luminance(), tmp_path_factory.mktemp("modnet") / "lum.onnx")


@pytest.mark.parametrize("hw,expected", [((512, 512), (512, 512)), ((1080, 1920), (512, 896)),
                                         ((300, 400), (512, 672)), ((400, 600), (384, 576)),
                                         ((800, 600), (672, 512)), ((500, 300), (832, 512))])
def test_size_rule(hw, expected):
    assert modnet_size(*hw) == expected
    assert all(s % 32 == 0 for s in modnet_size(*hw))


def test_preprocess_matches_the_reference_normalisation():
    frames = data.astronaut()[None, :500, :300]
    x = preprocess(frames)
    assert x.shape == (1, 3, 832, 512) and x.dtype == np.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    assert abs(x[0, 0].mean() - (frames[0, ..., 0].mean() - 127.5) / 127.5) < 0.01


def test_alpha_batched_on_astronaut(luminance_onnx):
    photo = data.astronaut()[:500, :300]
    frames = np.stack([photo, photo[::-1], 255 - photo])  # 3 frames with batch_size 2: two session runs
    matting = ModnetMatting.load(luminance_onnx, batch_size=2, device="cpu")
    assert matting.device == "cpu" and matting.batch_size == 2
    alpha = matting.alpha(frames)
    assert alpha.shape == (3, 500, 300) and alpha.dtype == np.float32
    assert 0.0 <= alpha.min() and alpha.max() <= 1.0
    expected = frames.astype(np.float32).mean(-1) / 255.0
    assert np.abs(alpha - expected).mean() < 0.01  # resized up to 832x512 and back: only resampling error
    assert np.abs(alpha[0] - alpha[1][::-1]).mean() < 0.01  # frames kept their order and identity


def test_fixed_batch_export_runs_one_frame_at_a_time(tmp_path):
    matting = ModnetMatting.load(_export(Luminance(), tmp_path / "b1.onnx", dynamic_batch=False), batch_size=8)
    assert matting.batch_size == 1
    assert matting.alpha(np.zeros((3, 64, 96, 3), np.uint8)).shape == (3, 64, 96)


def test_composite_formula_and_extremes(luminance_onnx):
    photo = data.astronaut()
    frames = photo[None]
    rng = np.random.default_rng(0)
    alpha = rng.random((1, 512, 512), dtype=np.float32)
    alpha[0, :100] = 1.0
    alpha[0, -100:] = 0.0
    out = composite(frames, alpha, (0, 255, 0))
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert np.array_equal(out[0, :100], photo[:100])
    assert (out[0, -100:] == np.array([0, 255, 0], np.uint8)).all()
    ref = np.round(photo * alpha[0, ..., None] + np.array([0, 255, 0]) * (1 - alpha[0, ..., None]))
    assert np.abs(out[0].astype(int) - ref.astype(int)).max() <= 1
    matting = ModnetMatting.load(luminance_onnx)
    assert np.array_equal(matting.composite(frames, alpha, (0, 255, 0)), out)


def test_modnet_architecture_exports_and_runs(tmp_path):
    torch.manual_seed(0)
    net = MODNet().eval()
    path = _export(net, tmp_path / "modnet.onnx", size=256)
    matting = ModnetMatting.load(path, batch_size=2, device="cpu")
    frames = np.stack([data.astronaut()[:400, :480]] * 2)  # 400x480 -> runs at 512x608 (size rule)
    x = preprocess(frames[:1])
    with torch.inference_mode():
        expected = net(torch.from_numpy(x)).numpy()
    got = matting.session.run(["output"], {"input": x})[0]
    assert got.shape == (1, 1, 512, 608) and np.abs(got - expected).max() < 2e-3  # faithful (random weights amplify rounding)
    alpha = matting.alpha(frames)
    assert alpha.shape == (2, 400, 480) and 0.0 <= alpha.min() and alpha.max() <= 1.0
    assert alpha.std() > 1e-3 and np.allclose(alpha[0], alpha[1], atol=1e-5)


def test_missing_or_corrupt_model(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        ModnetMatting.load(tmp_path / "none.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"nope")
    with pytest.raises(WeightsError, match="not a usable"):
        ModnetMatting.load(tmp_path / "bad.onnx")


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_padded_concatenations_keep_the_alpha(layout, monkeypatch):
    """The GPU inference form (the 35- and 99-channel concatenations padded to 40 and 104 with zero channels and
    zero conv weights) gives the same alpha, and the padded concatenations really ran."""
    import models.modnet as modnet

    torch.manual_seed(0)
    net = MODNet().eval().to(memory_format=layout)
    for p in net.parameters():
        p.data.normal_(0, 0.1)
    for name, buf in net.named_buffers():  # random BatchNorm statistics too, so every term matters
        if name.endswith("running_mean"):
            buf.normal_(0, 0.1)
        elif name.endswith("running_var"):
            buf.uniform_(0.5, 1.5)
    x = (torch.rand(2, 3, 64, 96) * 2 - 1).contiguous(memory_format=layout)
    widths: list[int] = []
    original = modnet.cat_padded

    def recording(parts, multiple):
        out = original(parts, multiple)
        widths.append(out.shape[1])
        return out

    monkeypatch.setattr(modnet, "cat_padded", recording)
    with torch.inference_mode():
        want = net(x)
        plain, widths[:] = list(widths), []
        got = net.pad_concatenations(8)(x)
    assert plain == [35, 99, 35] and widths == [40, 104, 40]
    assert (got - want).abs().max() < 1e-5 and want.std() > 1e-3
    assert net.f_branch.conv_f[0].layers[0].weight.shape[1] == 35  # the parameters (checkpoint layout) unchanged
