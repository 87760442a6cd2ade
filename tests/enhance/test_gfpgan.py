"""GFPGAN v1.4: parity with the official code on seeded weights, the batched modulated conv, the strict loader,
the ONNX export (ONNX Runtime vs torch) and, on a GPU, fp16 and TensorRT against fp32."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar.enhance.gfpgan import _channels_last, build_gfpgan, load_gfpgan_state
from avatar.core.errors import WeightsError
from models.gfpgan import (TAPS_MIN_CIN, GFPGANConfig, GFPGANv1Clean, ModulatedConv2d, border_kernels,
                           polyphase_weight, tap_weight, upsample_conv3x3, upsample_conv3x3_taps)
from tests.triton_interpreter import interpreted_error

SHARED = Path(__file__).resolve().parents[3] / "shared"
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
NEEDS_TENSORRT = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None,
                                    reason="tensorrt is not importable (the project's GPU machine has no TensorRT; "
                                           "pip install tensorrt there to run this test)")
MANIFEST = SHARED / "reference" / "gfpgan_v1.4.tsv"
PARITY = SHARED / "reference" / "gfpgan_parity.npz"
SMALL = GFPGANConfig(out_size=128, narrow=0.25)  # same class, far fewer FLOPs: for CI speed


def _seeded(seed: int = 1234) -> dict[str, torch.Tensor]:
    sys.path.insert(0, str(SHARED / "tools"))
    from seeded_weights import seeded_state_dict

    return seeded_state_dict(str(MANIFEST), seed)


def _random_state(cfg: GFPGANConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of a non-v1.4 config, scaled like the seeded rule so activations stay sane."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in GFPGANv1Clean(cfg).state_dict().items():
        x = torch.randn(v.shape, generator=g)
        if v.ndim >= 2 and "noises" not in k and "constant_input" not in k:
            fan_in = v[0, 0].numel() if k.endswith("modulated_conv.weight") else v[0].numel()
            x = x / fan_in**0.5 * (0.3 if "to_rgb" in k else 1.0)
        elif "noises" not in k and "constant_input" not in k:
            x = 0.02 * x + (1.0 if (k.endswith(".weight") and v.ndim == 1 and "style_conv" not in k) else 0.0)
        sd[k] = x
    return sd


@pytest.fixture(scope="module")
def seeded_state() -> dict[str, torch.Tensor]:
    return _seeded()


@pytest.fixture(scope="module")
def seeded_net(seeded_state) -> GFPGANv1Clean:
    return build_gfpgan(seeded_state)


def _manifest() -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in MANIFEST.read_text().splitlines():
        key, shape, _ = line.split("\t")
        rows.append((key, tuple(int(s) for s in shape.split(",")) if shape else ()))
    return rows


def test_state_dict_matches_manifest():
    sd = GFPGANv1Clean().state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == _manifest()  # same keys, shapes and order (285)


def test_parity_with_official_output(seeded_net):
    ref = np.load(PARITY)
    captured = {}
    hooks = [seeded_net.final_linear.register_forward_hook(lambda m, i, o: captured.__setitem__("style", o)),
             seeded_net.final_conv.register_forward_hook(lambda m, i, o: captured.__setitem__("final", o))]
    try:
        with torch.inference_mode():
            out = seeded_net(torch.from_numpy(ref["input"])).numpy()
    finally:
        for h in hooks:
            h.remove()
    d = np.abs(out - ref["output"])
    assert d.max() < 1e-4 and d.mean() < 1e-5, (d.max(), d.mean())
    assert np.abs(captured["style"].numpy() - ref["style_code"]).max() < 2e-5
    assert np.abs(captured["final"].numpy() - ref["final_conv_out_leakyrelu_input"]).max() < 2e-5
    assert out.std() > 0.1  # a real, non-flat output


@pytest.mark.parametrize("upsample,demodulate,k", [(False, True, 3), (True, True, 3), (False, False, 1)])
def test_batched_modconv_equals_grouped(upsample, demodulate, k):
    torch.manual_seed(0)
    conv = ModulatedConv2d(24, 16, k, num_style_feat=32, demodulate=demodulate, upsample=upsample)
    with torch.no_grad():
        conv.weight.normal_(0, 1 / (24 * k * k) ** 0.5)
    x, w = torch.randn(3, 24, 9, 9), torch.randn(3, 32) * 3
    with torch.inference_mode():
        batched = conv(x, w, gain=2**0.5)
        conv.grouped = True
        grouped = conv(x, w, gain=2**0.5)
    assert batched.shape == grouped.shape == (3, 16, 18 if upsample else 9, 18 if upsample else 9)
    assert (batched - grouped).abs().max() < 1e-4
    assert not torch.allclose(batched[0], batched[1])  # the style really differs per sample


@pytest.mark.parametrize("size,nhwc", [((4, 4), False), ((5, 9), True), ((16, 16), True)])
def test_polyphase_upsample_conv_equals_bilinear_then_conv(size, nhwc):
    """Interior phases and the recomputed 2-pixel border both equal bilinear x2 followed by the 3x3 conv."""
    g = torch.Generator().manual_seed(size[1])
    x, w, b = torch.randn(2, 6, *size, generator=g), torch.randn(5, 6, 3, 3, generator=g), torch.randn(5, generator=g)
    if nhwc:
        x = x.contiguous(memory_format=torch.channels_last)
    up = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    want = torch.nn.functional.conv2d(up, w, b, padding=1)
    got = upsample_conv3x3(x, w, b)
    assert got.shape == want.shape
    assert (got - want).abs().max() < 2e-5
    assert got.is_contiguous(memory_format=torch.channels_last) == nhwc  # NHWC survives for the next conv


@pytest.mark.parametrize("form,size,nhwc", [("compiled", (6, 7), False), ("compiled", (4, 4), True),
                                             ("compiled", (9, 5), True), ("onnx", (6, 7), False)])
def test_polyphase_functional_forms_equal_bilinear_then_conv(form, size, nhwc, monkeypatch):
    """The forms torch.compile (border deltas as pads) and ONNX export (concatenation) trace, run here in eager
    mode; the compiled form also with the border kernels baked."""
    flag = "torch.compiler.is_compiling" if form == "compiled" else "torch.onnx.is_in_onnx_export"
    monkeypatch.setattr(flag, lambda: True)
    g = torch.Generator().manual_seed(7)
    x, w, b = torch.randn(2, 6, *size, generator=g), torch.randn(5, 6, 3, 3, generator=g), torch.randn(5, generator=g)
    if nhwc:
        x, w = (t.contiguous(memory_format=torch.channels_last) for t in (x, w))
    up = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    want = torch.nn.functional.conv2d(up, w, b, padding=1)
    assert (upsample_conv3x3(x, w, b) - want).abs().max() < 2e-5
    if form == "compiled":
        baked = upsample_conv3x3(x, w, b, polyphase_weight(w, nhwc), border_kernels(w))
        assert (baked - want).abs().max() < 2e-5
        assert border_kernels(w)[0].is_contiguous(memory_format=torch.channels_last) == nhwc


def _bilinear_then_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    up = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    return torch.nn.functional.conv2d(up, w, b, padding=1)


@pytest.mark.parametrize("size,nhwc,bias", [((1, 1), False, True), ((2, 3), True, False), ((5, 9), True, True),
                                            ((8, 8), False, False)])
def test_tap_form_equals_bilinear_then_conv(size, nhwc, bias):
    """9 channel-mixing taps at low resolution + their bilinear sums = bilinear x2 then the 3x3 conv, borders and
    one-pixel inputs included (float64: any wrong weight or edge shows far above rounding)."""
    g = torch.Generator().manual_seed(size[0] * 10 + size[1])
    x = torch.randn(2, 6, *size, generator=g, dtype=torch.float64)
    w, b = torch.randn(5, 6, 3, 3, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    if nhwc:
        x = x.contiguous(memory_format=torch.channels_last)
    want = _bilinear_then_conv(x, w, b if bias else None)
    got = upsample_conv3x3_taps(x, w, b if bias else None)
    assert got.shape == want.shape
    assert (got - want).abs().max() < 1e-12
    assert got.is_contiguous(memory_format=torch.channels_last) == nhwc
    assert (upsample_conv3x3_taps(x, w, b if bias else None, tap_weight(w, nhwc)) - want).abs().max() < 1e-12


def test_upsample_conv_takes_the_tap_form_from_the_cpu_threshold(monkeypatch):
    """Inputs with at least TAPS_MIN_CIN["cpu"] channels take the tap form (its float32 rounding differs from the
    polyphase conv's, which is how the test tells them apart); both equal bilinear-then-conv."""
    g = torch.Generator().manual_seed(3)
    x, w = torch.randn(1, 8, 6, 6, generator=g), torch.randn(4, 8, 3, 3, generator=g)
    want = _bilinear_then_conv(x, w, None)
    monkeypatch.setitem(TAPS_MIN_CIN, "cpu", 8)
    taps = upsample_conv3x3(x, w)
    monkeypatch.setitem(TAPS_MIN_CIN, "cpu", 9)
    poly = upsample_conv3x3(x, w)
    assert (taps - want).abs().max() < 2e-5 and (poly - want).abs().max() < 2e-5
    assert torch.equal(taps, upsample_conv3x3_taps(x, w)) and not torch.equal(taps, poly)


TAP_KERNEL_CHECK = """
import torch
import models.gfpgan as G
from models.gfpgan_triton import tap_sums
g = torch.Generator().manual_seed(0)
worst = 0.0
for b, c, h, w in ((1, 3, 1, 1), (2, 17, 3, 7), (1, 20, 6, 5)):
    z = torch.randn(b, 9 * c, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    bias = torch.randn(c, generator=g)
    for bb in (bias, z.new_empty(0)):
        worst = max(worst, float((tap_sums(z, bb) - G.tap_sums(z, bb if bb.numel() else None)).abs().max()))
print(worst)
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed (CUDA machines)")
def test_tap_kernel_equals_torch_form_in_the_triton_interpreter():
    """The Triton kernel's indexing, masks and edge taps, run by triton's CPU interpreter against the torch form."""
    assert interpreted_error(TAP_KERNEL_CHECK) < 1e-5


def test_small_net_in_tap_form_equals_polyphase(monkeypatch):
    """The whole network with every upsampling conv in the tap form (threshold 0) gives the polyphase output."""
    net = _channels_last(build_gfpgan(_random_state(SMALL), SMALL)).eval().bake(nhwc=True)
    x = (torch.rand(2, 3, 128, 128) * 2 - 1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        monkeypatch.setitem(TAPS_MIN_CIN, "cpu", 10**9)
        poly = net(x)
        monkeypatch.setitem(TAPS_MIN_CIN, "cpu", 0)
        taps = net(x)
    assert (taps - poly).abs().max() < 1e-5
    assert not torch.equal(taps, poly)  # the tap form really ran (its rounding differs)


def test_compiled_forms_and_baked_weights_keep_the_output(monkeypatch):
    """What the compiled engine runs (polyphase with pads, the RGB 1x1 conv as products, baked derived weights)
    gives the eager output; moving the net drops the baked tensors so stale ones are never used."""
    net = _channels_last(build_gfpgan(_random_state(SMALL), SMALL)).eval()
    x = (torch.rand(2, 3, 128, 128) * 2 - 1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = net(x)
        net.bake(nhwc=True)
        assert net.sft_baked is not None
        baked = net(x)
        monkeypatch.setattr("torch.compiler.is_compiling", lambda: True)
        compiled_form = net(x)
    assert (baked - want).abs().max() < 1e-5
    assert (compiled_form - want).abs().max() < 1e-4
    net.to(torch.float64)
    assert net.sft_baked is None and all(not m.baked for m in net.modules() if isinstance(m, ModulatedConv2d))


def test_full_small_net_batched_equals_grouped():
    net = build_gfpgan(_random_state(SMALL), SMALL)
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    with torch.inference_mode():
        batched = net(x)
        net.use_grouped_conv(True)
        grouped = net(x)
    assert (batched - grouped).abs().max() < 1e-4
    assert batched.std() > 0.05


def test_loader_reads_params_ema_file(tmp_path, seeded_state):
    path = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params_ema": seeded_state, "params": {"x": torch.zeros(1)}}, path)
    state = load_gfpgan_state(path)
    assert set(state) == set(seeded_state)
    assert torch.equal(state["final_linear.bias"], seeded_state["final_linear.bias"])
    net = build_gfpgan(state)
    assert torch.equal(net.stylegan_decoder.noises.noise3, seeded_state["stylegan_decoder.noises.noise3"])


def test_loader_falls_back_to_params(tmp_path):
    sd = {"a": torch.ones(2)}
    torch.save({"params": sd}, tmp_path / "p.pth")
    assert torch.equal(load_gfpgan_state(tmp_path / "p.pth")["a"], sd["a"])


def test_loader_lists_missing_and_unexpected_keys(seeded_state):
    broken = dict(seeded_state)
    del broken["final_linear.weight"]
    broken["extra.layer.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError) as e:
        build_gfpgan(broken)
    assert "final_linear.weight" in str(e.value) and "extra.layer.weight" in str(e.value)
    assert "missing" in str(e.value) and "unexpected" in str(e.value)


def test_loader_reports_wrong_shape_and_missing_file(tmp_path, seeded_state):
    bad = dict(seeded_state)
    bad["toRGB.0.bias"] = torch.zeros(4)
    with pytest.raises(WeightsError, match="toRGB.0.bias"):
        build_gfpgan(bad)
    with pytest.raises(WeightsError, match="not found"):
        load_gfpgan_state(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="readable"):
        load_gfpgan_state(tmp_path / "junk.pth")


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 2.0) -> float:
    """PSNR of two [-1,1] images (peak-to-peak 2)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(peak**2 / max(mse, 1e-20))


def _onnx_vs_torch(net: GFPGANv1Clean, size: int, path: Path, batch: int) -> tuple[float, tuple]:
    from engines.gfpgan_onnx import GFPGANOnnx, export_onnx

    export_onnx(net, path, out_size=size)
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.inference_mode():
        ref = net(x).numpy()
    out = GFPGANOnnx(path, "cpu", threads=2)(x).numpy()
    return psnr(out, ref), out.shape


def test_onnx_export_matches_torch_small(tmp_path):
    net = build_gfpgan(_random_state(SMALL), SMALL)
    value, shape = _onnx_vs_torch(net, 128, tmp_path / "small.onnx", batch=3)  # batch 3 != export batch 1
    assert shape == (3, 3, 128, 128)
    assert value >= 40.0, value


@pytest.mark.slow
def test_onnx_export_matches_torch_full_size(tmp_path, seeded_net):
    value, shape = _onnx_vs_torch(seeded_net, 512, tmp_path / "gfpgan.onnx", batch=2)
    assert shape == (2, 3, 512, 512)
    assert value >= 40.0, value


# ---------------------------------------------------------------------------------------------------- GPU
def _gpu_setup(seeded_state) -> tuple[GFPGANv1Clean, torch.Tensor, np.ndarray]:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    net = build_gfpgan(seeded_state).cuda()
    x = torch.from_numpy(np.load(PARITY)["input"]).cuda()
    with torch.inference_mode():
        ref = net(x).float().cpu().numpy()
    return net, x, ref


@pytest.mark.gpu
@NEEDS_CUDA
def test_gpu_fp32_parity_and_fp16_psnr(seeded_state):
    net, x, ref32 = _gpu_setup(seeded_state)
    official = np.load(PARITY)["output"]
    assert np.abs(ref32 - official).max() < 1e-3
    net = _channels_last(net.half())  # the 5-D modulated weights cannot take module.to(memory_format=...)
    with torch.inference_mode():
        out16 = net(x.half().contiguous(memory_format=torch.channels_last)).float().cpu().numpy()
    value = psnr(out16, ref32)
    print(f"fp16 vs fp32 PSNR {value:.1f} dB")
    assert value >= 35.0, value


@pytest.mark.gpu
@NEEDS_CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gpu_tap_kernel_equals_bilinear_then_conv(dtype):
    """The Triton kernel of the tap sums (odd sizes, bias, channels not a multiple of its block) against
    bilinear-then-conv in float64, eager and inside torch.compile."""
    from models.gfpgan import load_tap_kernel
    assert load_tap_kernel(), "triton is missing on this GPU machine"
    g = torch.Generator().manual_seed(5)
    x, w, b = torch.randn(3, 40, 7, 13, generator=g), torch.randn(70, 40, 3, 3, generator=g) * 0.1, torch.randn(70, generator=g)
    want = _bilinear_then_conv(x.double(), w.double(), b.double())
    xc = x.cuda().to(dtype).contiguous(memory_format=torch.channels_last)
    wc, bc = w.cuda().to(dtype), b.cuda().to(dtype)
    with torch.inference_mode():
        eager = upsample_conv3x3_taps(xc, wc, bc)
        compiled = torch.compile(upsample_conv3x3_taps)(xc, wc, bc)
    tol = 2e-4 if dtype == torch.float32 else 3e-2
    for got in (eager, compiled):
        assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
        assert (got.double().cpu() - want).abs().max() < tol * want.abs().max()


@pytest.mark.gpu
@NEEDS_CUDA
@NEEDS_TENSORRT
def test_gpu_tensorrt_matches_torch(seeded_state, tmp_path):
    from engines.gfpgan_onnx import export_onnx
    from engines.gfpgan_tensorrt import GFPGANTensorRT, build_engine

    net, x, ref32 = _gpu_setup(seeded_state)
    onnx_path = export_onnx(net, tmp_path / "g.onnx")
    engine = build_engine(onnx_path, tmp_path / "g.engine", fp16=True, max_batch=4, opt_batch=2)
    out = GFPGANTensorRT(engine)(x).float().cpu().numpy()
    value = psnr(out, ref32)
    print(f"TensorRT fp16 vs torch fp32 PSNR {value:.1f} dB")
    assert value >= 40.0, value
