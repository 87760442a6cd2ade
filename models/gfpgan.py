"""GFPGAN v1.4 ("clean" architecture): a U-Net encoder that predicts StyleGAN2 latents and SFT conditions, and a
StyleGAN2 decoder modulated by them. Written from the paper's / official repository's description; parameter names
and shapes equal the official `GFPGANv1Clean` state_dict so its checkpoints load strictly.

Inference-only differences from the official forward (same function, better kernels):
- the stored noise buffers are always used (the official `randomize_noise=False`): deterministic and exportable;
- the modulated convolution runs as one shared, batched convolution: the input channels are scaled by the style,
  the output channels by the demodulation coefficients. The official per-sample grouped convolution
  (groups=batch) is kept as `modulated_conv_grouped` and selected with `GFPGANv1Clean.use_grouped_conv(True)`;
- under torch.compile a few steps take forms inductor can fuse into one pass after each conv (polyphase interleave
  and border deltas as index arithmetic and pads, SFT with padded scale/shift, the 3-channel input conv as products):
  on an H100 (fp16, batch 64) 822 -> 901 faces/s together with `GFPGANv1Clean.bake` (weight-derived tensors kept);
  the border fix as 1-row deltas (`border_deltas`) instead of recomputed 3-row strips: 894 -> 942 (A/B, one card).
  Eager mode keeps the forms that are fastest there;
- upsampling convs with many input channels run in the tap form (`upsample_conv3x3_taps`: 4x fewer products;
  its per-channel sums are a Triton kernel on CUDA): 954 -> 1008 faces/s at batch 128 (A/B, one H100).

Tensors: input (B,3,S,S) RGB in [-1,1]; output (B,3,S,S) RGB, roughly [-1,1] (not clamped).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.triton_loader import load_cuda_kernel

LRELU_SLOPE = 0.2
STYLE_CONV_GAIN = math.sqrt(2.0)  # StyleGAN2's "equalised" gain after the modulated conv


@dataclass(frozen=True)
class GFPGANConfig:
    out_size: int = 512  # face crop side, px (a power of two)
    num_style_feat: int = 512  # width of the StyleGAN2 latent w
    channel_multiplier: int = 2  # StyleGAN2 "large" channel widths at 64 px and above
    num_mlp: int = 8  # style MLP depth (in the checkpoint; unused when input_is_latent)
    narrow: float = 1.0  # channel width ratio (the U-Net uses half of it)
    sft_half: bool = True  # SFT modulates only the second half of the decoder channels
    different_w: bool = True  # one latent per decoder layer (else one shared latent)
    input_is_latent: bool = True  # the encoder predicts w directly (style MLP skipped)


V1_4 = GFPGANConfig()


def _decoder_channels(cfg: GFPGANConfig, narrow: float) -> dict[int, int]:
    m = cfg.channel_multiplier
    return {4: int(512 * narrow), 8: int(512 * narrow), 16: int(512 * narrow), 32: int(512 * narrow),
            64: int(256 * m * narrow), 128: int(128 * m * narrow), 256: int(64 * m * narrow),
            512: int(32 * m * narrow), 1024: int(16 * m * narrow)}


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, LRELU_SLOPE)


def _resize2x(x: Tensor, factor: float) -> Tensor:
    # CUDA's NHWC bilinear kernel indexes with 32-bit ints: split big batches so each output stays < 2**31 values
    pieces = -(-int(x.numel() * factor * factor) // (2 ** 31 - 1))
    if pieces > 1 and x.shape[0] > 1:
        return torch.cat([_resize2x(c, factor) for c in x.chunk(min(pieces, x.shape[0]))])
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


# Bilinear x2 (align_corners=False) then a 3x3 conv, per axis: output row 2i+p reads low-res rows i-1, i, i+1 only.
# _BILINEAR_TAPS[p, a, t] = weight of the 3x3 kernel's tap t (rows -1, 0, 1) on low-res row i+a-1.
_BILINEAR_TAPS = ((((0.75, 0.25, 0.0), (0.25, 0.75, 0.75), (0.0, 0.0, 0.25)),
                   ((0.25, 0.0, 0.0), (0.75, 0.75, 0.25), (0.0, 0.25, 0.75))))
_TAPS_ON: dict[torch.device, Tensor] = {}  # one copy per device: a host->GPU copy per call would stall the stream


def _bilinear_taps(device: torch.device) -> Tensor:
    if device not in _TAPS_ON:
        _TAPS_ON[device] = torch.tensor(_BILINEAR_TAPS, dtype=torch.float32, device=device)
    return _TAPS_ON[device]


def polyphase_weight(weight: Tensor, nhwc: bool) -> Tensor:
    """The (4*Cout, Cin, 3, 3) kernel of `upsample_conv3x3` for a (Cout, Cin, 3, 3) conv weight, in its dtype,
    channels_last when `nhwc`. Output channels ordered (phase row, phase col, c_out): in NHWC each output pixel
    then reads one contiguous run of c_out values (a (c_out, p, q) order would make the interleave read with a
    stride of 4)."""
    c_out, c_in = weight.shape[:2]
    taps = _bilinear_taps(weight.device)
    phased = torch.einsum("pas,qbt,oist->pqoiab", taps, taps, weight.float()).reshape(4 * c_out, c_in, 3, 3)
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    return phased.to(weight.dtype).contiguous(memory_format=fmt)


def border_kernels(weight: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The 1-D kernels of `border_deltas` for a (Cout, Cin, 3, 3) conv weight: top (2*Cout, Cin, 1, 3) for output
    rows 0 and 1, bottom for rows 2H-2 and 2H-1, left and right (2*Cout, Cin, 3, 1) for the outer columns."""
    q = 0.25  # the bilinear weight on the neighbour that clamping replaces
    w = weight.float()  # differences of fp16 taps: round once, at the end
    r0, r1, r2 = (w[:, :, i:i + 1, :] for i in range(3))  # kernel rows
    c0, c1, c2 = (w[:, :, :, i:i + 1] for i in range(3))  # kernel columns
    fmt = torch.channels_last if _is_nhwc(weight) else torch.contiguous_format
    return tuple(torch.cat(pair).mul(q).to(weight.dtype).contiguous(memory_format=fmt)
                 for pair in ((r1 - r0, r0), (r2, r1 - r2), (c1 - c0, c0), (c2, c1 - c2)))


def border_deltas(x: Tensor, weight: Tensor, kernels: tuple[Tensor, ...] | None = None) -> list[Tensor]:
    """What the polyphase conv misses at the border: deltas for output rows 0-1 (b, c_out, 2, 2w), rows 2h-2..2h-1,
    columns 0-1 (b, c_out, 2h, 2) and columns 2w-2..2w-1 (corners get two).

    The polyphase conv sees the image bilinear-upsampled with zeros outside x: its upsampled border rows are
    0.75*x[0] instead of x[0] (clamped source), and it sees a row -1 of 0.25*x[0] where the conv pads with 0.
    Both errors are +-0.25 times one (column-upsampled) row of x, so the fix is a 1x3 conv of that single row:
    output row 0 gets 0.25*(w1-w0)*row, row 1 gets 0.25*w0*row (w_i: kernel rows), likewise at the bottom and,
    with rows and columns swapped, at the sides (over the zero-padded vertical upsampling, rows -1..2H). 4.5x fewer
    products than recomputing 3-row strips, and exact (the same sums up to rounding)."""
    b, _, h, w = x.shape
    top_k, bottom_k, left_k, right_k = border_kernels(weight) if kernels is None else kernels
    c_out = top_k.shape[0] // 2

    def rows(line: Tensor, k: Tensor) -> Tensor:  # (b, c_in, 1, w) -> 2 output rows (b, c_out, 2, 2w)
        up = F.interpolate(line, scale_factor=(1.0, 2.0), mode="bilinear", align_corners=False)
        return F.conv2d(up, k, padding=(0, 1)).view(b, 2, c_out, 2 * w).transpose(1, 2)

    def cols(line: Tensor, k: Tensor) -> Tensor:  # (b, c_in, h, 1) -> 2 output columns (b, c_out, 2h, 2)
        up = F.interpolate(F.pad(line, (0, 0, 1, 1)), scale_factor=(2.0, 1.0), mode="bilinear",
                           align_corners=False)[:, :, 1:-1]  # rows -1 .. 2h of the zero-padded upsampling
        return F.conv2d(up, k).view(b, 2, c_out, 2 * h).permute(0, 2, 3, 1)

    return [rows(x[:, :, :1], top_k), rows(x[:, :, -1:], bottom_k), cols(x[..., :1], left_k),
            cols(x[..., -1:], right_k)]


# The tap form of bilinear x2 + 3x3 conv. Per axis, output row 2i+p under kernel row tap a reads the upsampled row
# 2i+p+a-1, i.e. these low-res rows (offset from i) with these bilinear weights; clamping at the border = replicate
# padding. Two taps fall outside the image at the border (the conv's zero padding): (p=0, a=0) above row 0 and
# (p=1, a=2) below the last row.
_TAP_READS = {(0, 0): ((-1, 0.75), (0, 0.25)), (0, 1): ((-1, 0.25), (0, 0.75)), (0, 2): ((0, 0.75), (1, 0.25)),
              (1, 0): ((-1, 0.25), (0, 0.75)), (1, 1): ((0, 0.75), (1, 0.25)), (1, 2): ((0, 0.25), (1, 0.75))}
# Input channels from which the tap form replaces the polyphase conv: it has 4x fewer products but writes 2.25x
# more, so it pays where there are many input channels per output. One H100, fp16, compiled, batch 128: polyphase
# 954 faces/s, taps everywhere 978, from 256 channels 1008. 2 CPU cores, eager, one face: 2.70 -> 2.37 s.
TAPS_MIN_CIN = {"cuda": 256, "cpu": 256}
_TAP_KERNEL = None  # models.gfpgan_triton.tap_sums once loaded (None where triton is missing)
_TAP_KERNEL_TRIED = False


def tap_weight(weight: Tensor, nhwc: bool) -> Tensor:
    """The (9*Cout, Cin, 1, 1) kernel of the tap form for a (Cout, Cin, 3, 3) conv weight: output channels ordered
    (row tap, column tap, c_out)."""
    c_out, c_in = weight.shape[:2]
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    return weight.permute(2, 3, 0, 1).reshape(9 * c_out, c_in, 1, 1).contiguous(memory_format=fmt)


def load_tap_kernel() -> bool:
    """Import the Triton kernel of the tap sums (CUDA); False where triton is not installed or a visible GPU is
    older than triton supports (compute capability 7.0)."""
    global _TAP_KERNEL, _TAP_KERNEL_TRIED
    if not _TAP_KERNEL_TRIED:
        _TAP_KERNEL_TRIED = True
        _TAP_KERNEL = load_cuda_kernel("models.gfpgan_triton", "tap_sums")
    return _TAP_KERNEL is not None


def uses_taps(weight: Tensor) -> bool:
    """Whether the upsampling conv with this (Cout, Cin, k, k) weight runs in the tap form (on the weight's device),
    rather than polyphase: the one rule for the forward and for what `bake` keeps."""
    if weight.shape[-1] != 3 or torch.onnx.is_in_onnx_export():
        return False
    if weight.is_cuda:  # the torch form of the sums is slow on a GPU: without the kernel, stay polyphase
        if not _TAP_KERNEL_TRIED and not torch.compiler.is_compiling():
            load_tap_kernel()
        return _TAP_KERNEL is not None and weight.shape[1] >= TAPS_MIN_CIN["cuda"]
    return not torch.compiler.is_compiling() and weight.shape[1] >= TAPS_MIN_CIN["cpu"]


def tap_sums(z: Tensor, bias: Tensor | None = None) -> Tensor:
    """(B, 9*C, H, W) tap maps -> (B, C, 2H, 2W): per channel, the 9 maps bilinearly upsampled, shifted by their
    tap and added (+ bias). Torch ops, separable (columns, then rows); the Triton kernel does the same in one pass."""
    b, c9, h, w = z.shape
    c = c9 // 9
    taps = F.pad(z, (1, 1, 1, 1), mode="replicate").view(b, 3, 3, c, h + 2, w + 2)

    def reads(src: Tensor, p: int, a: int, dim: int, n: int) -> Tensor:  # dim 3: columns, 2: rows
        t = sum(wt * src.narrow(dim, 1 + d, n) for d, wt in _TAP_READS[p, a])
        if (p, a) in ((0, 0), (1, 2)):  # zero the first / last row or column: there this tap is outside the image
            edge = (1, 0) if a == 0 else (0, 1)
            t = F.pad(t.narrow(dim, 1 if a == 0 else 0, n - 1), edge if dim == 3 else (0, 0) + edge)
        return t

    cols = [[sum(reads(taps[:, a, bt], q, bt, 3, w) for bt in range(3)) for q in range(2)] for a in range(3)]
    phases = [torch.stack([sum(reads(cols[a][q], p, a, 2, h) for a in range(3)) for q in range(2)], -1)
              for p in range(2)]  # (b, c, h, w, 2) per row phase
    out = torch.stack(phases, 3).reshape(b, c, 2 * h, 2 * w)
    if _is_nhwc(z):
        out = out.contiguous(memory_format=torch.channels_last)
    return out if bias is None else out + bias.to(out.dtype)[:, None, None]


def upsample_conv3x3_taps(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                          tapped: Tensor | None = None) -> Tensor:
    """conv2d(bilinear_x2(x), weight, bias, padding=1) as the 9 kernel taps' channel mixing at low resolution
    (bilinear upsampling acts on each channel alike, so it commutes with mixing channels) and their bilinear sums.
    Exact at the borders. `tapped`: `tap_weight(weight, nhwc)` when the caller keeps it."""
    tapped = tap_weight(weight, _is_nhwc(x)) if tapped is None else tapped
    z = F.conv2d(x, tapped)
    if x.is_cuda and _TAP_KERNEL is not None:
        return _TAP_KERNEL(z, x.new_empty(0) if bias is None else bias)
    return tap_sums(z, bias)


def _upsample_kernels(weight: Tensor, nhwc: bool) -> dict[str, Tensor | tuple[Tensor, ...]]:
    """The weight-derived kernels `upsample_conv3x3` needs for this weight in the form it will run (its keyword
    arguments): the tap kernel, or the polyphase and border kernels."""
    if uses_taps(weight):
        return {"tapped": tap_weight(weight, nhwc)}
    return {"phased": polyphase_weight(weight, nhwc), "border": border_kernels(weight)}


def upsample_conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None, phased: Tensor | None = None,
                     border: tuple[Tensor, ...] | None = None, tapped: Tensor | None = None) -> Tensor:
    """conv2d(bilinear_x2(x), weight, bias, padding=1) without building the upsampled input.

    Polyphase form: each of the 4 output phases is a 3x3 conv of the low-res input with a combined kernel, so one
    conv with 4*Cout outputs at low resolution (a 4x wider GEMM, no 4x larger intermediate) followed by an
    interleave. Its zero padding differs from the clamped bilinear border in the 2 outer rows/columns, which get
    exact deltas (`border_deltas`; the ONNX form recomputes them from thin strips). Same products summed in
    another order (fp32 differences ~1e-6).
    `phased`: `polyphase_weight(weight, nhwc)`, `border`: `border_kernels(weight)`, when the caller keeps them
    (see `GFPGANv1Clean.bake`). Where `uses_taps` says so, the tap form runs instead (`upsample_conv3x3_taps`)."""
    b, c_in, h, w = x.shape
    c_out, k = weight.shape[0], weight.shape[-1]
    if uses_taps(weight):
        return upsample_conv3x3_taps(x, weight, bias, tapped)
    if k != 3 or min(h, w) < 4:
        return F.conv2d(_resize2x(x, 2.0), weight, bias, padding=k // 2)
    if phased is None:
        phased = polyphase_weight(weight, _is_nhwc(x))
    y = F.conv2d(x, phased, None if bias is None else bias.repeat(4), padding=1)
    interleaved = y.view(b, 2, 2, c_out, h, w).permute(0, 3, 4, 1, 5, 2)  # (b, c, h, 2, w, 2)
    if torch.onnx.is_in_onnx_export():  # the tracer does not follow writes into views: stay functional
        top = F.conv2d(_resize2x(x[:, :, :2], 2.0)[:, :, :3], weight, bias, padding=1)[:, :, :2]
        bottom = F.conv2d(_resize2x(x[:, :, -2:], 2.0)[:, :, 1:], weight, bias, padding=1)[:, :, 1:]
        left = F.conv2d(_resize2x(x[..., :2], 2.0)[..., :3], weight, bias, padding=1)[..., :2]
        right = F.conv2d(_resize2x(x[..., -2:], 2.0)[..., 1:], weight, bias, padding=1)[..., 1:]
        out = interleaved.reshape(b, c_out, 2 * h, 2 * w)
        out = torch.cat([top, out[:, :, 2:-2], bottom], dim=2)
        return torch.cat([left, out[..., 2:-2], right], dim=3)
    top, bottom, left, right = border_deltas(x, weight, border)
    if torch.compiler.is_compiling():
        # the interleave and the border deltas as index arithmetic + masked loads (pads): inductor fuses them with
        # the caller's pointwise epilogue into one pass; writes into a buffer would force it to materialise the result
        return (interleaved.reshape(b, c_out, 2 * h, 2 * w) + F.pad(top, (0, 0, 0, 2 * h - 2))
                + F.pad(bottom, (0, 0, 2 * h - 2, 0)) + F.pad(left, (0, 2 * w - 2)) + F.pad(right, (2 * w - 2, 0)))
    fmt = torch.channels_last if _is_nhwc(x) else torch.contiguous_format
    out = torch.empty(b, c_out, 2 * h, 2 * w, dtype=y.dtype, device=y.device, memory_format=fmt)
    out.view(b, c_out, h, 2, w, 2).copy_(interleaved)
    out[:, :, :2] += top
    out[:, :, -2:] += bottom
    out[..., :2] += left
    out[..., -2:] += right
    return out


def _is_nhwc(t: Tensor) -> bool:
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


# ----------------------------------------------------------------------------------------------------------------
# Modulated convolution, two equivalent forms
# ----------------------------------------------------------------------------------------------------------------
def modulated_conv_grouped(x: Tensor, weight: Tensor, style: Tensor, demodulate: bool, upsample: bool,
                           eps: float = 1e-8) -> Tensor:
    """Reference form (as the official code): per-sample weights, one grouped conv with groups=batch.

    x (B,Cin,H,W); weight (1,Cout,Cin,k,k); style (B,Cin) = the modulation output."""
    b, c_in = style.shape
    c_out, k = weight.shape[1], weight.shape[-1]
    w = weight * style.view(b, 1, c_in, 1, 1)
    if demodulate:
        w = w * torch.rsqrt(w.pow(2).sum([2, 3, 4]) + eps).view(b, c_out, 1, 1, 1)
    if upsample:
        x = _resize2x(x, 2.0)
    h, wd = x.shape[-2:]
    out = F.conv2d(x.reshape(1, b * c_in, h, wd), w.reshape(b * c_out, c_in, k, k), padding=k // 2, groups=b)
    return out.view(b, c_out, *out.shape[-2:])


def weight_squares(weight: Tensor) -> Tensor:
    """(Cout, Cin) sums over the kernel taps of the squared (1,Cout,Cin,k,k) modulated weight, float32."""
    return weight[0].float().pow(2).sum([2, 3])


def demodulation(weight: Tensor, style: Tensor, eps: float = 1e-8, w_sq: Tensor | None = None) -> Tensor:
    """(B,Cout) coefficients rsqrt(sum_{cin,k} (w*s)^2 + eps), in float32 (fp16 sums of squares can overflow).
    `w_sq`: `weight_squares(weight)` when the caller keeps it."""
    w_sq = weight_squares(weight) if w_sq is None else w_sq
    return torch.rsqrt(style.float().pow(2) @ w_sq.t() + eps)


def modulated_conv_batched(x: Tensor, weight: Tensor, style: Tensor, demodulate: bool, upsample: bool,
                           gain: float = 1.0, eps: float = 1e-8, add: Tensor | None = None,
                           baked: dict[str, Tensor] | None = None) -> Tensor:
    """Same result as `modulated_conv_grouped(...) * gain (+ add)`, as one shared conv over the whole batch.

    conv(x, w*s) = conv(x*s, w) because s scales input channels; demodulation scales output channels, so it moves
    after the conv. With demodulation the result is invariant to the scale of s, so s is normalised per sample
    first: the fp16 intermediate then has the magnitude of the grouped form's output (real checkpoints can have
    large styles). `baked`: weight-derived tensors kept by `ModulatedConv2d.bake` ("w_sq" and `_upsample_kernels`)."""
    baked = baked or {}
    if demodulate:
        rms = style.float().pow(2).mean(1, keepdim=True).add(eps).rsqrt()
        style = style * rms.to(style.dtype)
    x = x * style[:, :, None, None]  # scaling commutes with the (per-channel linear) bilinear upsampling
    k = weight.shape[-1]
    if upsample:
        out = upsample_conv3x3(x, weight[0], phased=baked.get("phased"), border=baked.get("border"),
                               tapped=baked.get("tapped"))
    else:
        out = F.conv2d(x, weight[0], padding=k // 2)
    if not demodulate:
        out = out * gain if gain != 1.0 else out
        return out if add is None else out + add  # out first: the result keeps out's layout
    coef = (demodulation(weight, style, eps, baked.get("w_sq")) * gain).to(out.dtype)[:, :, None, None]
    if add is None:
        return out * coef
    return torch.addcmul(_same_layout(add, out), out, coef)  # one pass in eager mode


def _same_layout(t: Tensor, like: Tensor) -> Tensor:
    """t in like's memory format: a pointwise op's output follows its first operand, and NHWC must survive."""
    if t.dim() == 4 and _is_nhwc(like):
        return t.contiguous(memory_format=torch.channels_last)
    return t


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated conv without bias; optional bilinear x2 upsampling of the input before the conv."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, num_style_feat: int, demodulate: bool = True,
                 upsample: bool = False):
        super().__init__()
        self.demodulate, self.upsample, self.grouped = demodulate, upsample, False
        self.baked: dict[str, Tensor] = {}
        self.modulation = nn.Linear(num_style_feat, c_in, bias=True)
        self.weight = nn.Parameter(torch.zeros(1, c_out, c_in, kernel_size, kernel_size))

    def forward(self, x: Tensor, latent: Tensor, gain: float = 1.0, add: Tensor | None = None) -> Tensor:
        """conv(x) * gain + add (add broadcasts to the output, e.g. noise + bias)."""
        style = self.modulation(latent)
        if self.grouped:
            out = modulated_conv_grouped(x, self.weight, style, self.demodulate, self.upsample)
            out = out * gain if gain != 1.0 else out
            return out if add is None else out + add
        return modulated_conv_batched(x, self.weight, style, self.demodulate, self.upsample, gain, add=add,
                                      baked=self.baked)

    def bake(self, nhwc: bool) -> None:
        self.baked = {"w_sq": weight_squares(self.weight)}
        if self.upsample and self.weight.shape[-1] == 3:
            self.baked.update(_upsample_kernels(self.weight[0], nhwc))


class StyleConv(nn.Module):
    """Modulated conv * sqrt(2) + noise_strength * stored noise + bias -> LeakyReLU(0.2)."""

    def __init__(self, c_in: int, c_out: int, num_style_feat: int, upsample: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, c_out, 1, 1))
        self.modulated_conv = ModulatedConv2d(c_in, c_out, 3, num_style_feat, demodulate=True, upsample=upsample)

    def forward(self, x: Tensor, latent: Tensor, noise: Tensor) -> Tensor:
        noise_bias = (self.weight * noise + self.bias).to(x.dtype)  # (1,C,H,W): shared by the whole batch
        return _lrelu(self.modulated_conv(x, latent, gain=STYLE_CONV_GAIN, add=noise_bias))


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) + bias, added to the upsampled RGB skip of the previous level."""

    def __init__(self, c_in: int, num_style_feat: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.modulated_conv = ModulatedConv2d(c_in, 3, 1, num_style_feat, demodulate=False)

    def forward(self, x: Tensor, latent: Tensor, skip: Tensor | None) -> Tensor:
        return self.modulated_conv(x, latent, add=self.bias if skip is None else _resize2x(skip, 2.0) + self.bias)


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, channels, size, size))

    def forward(self, batch: int) -> Tensor:
        w = self.weight
        if _is_nhwc(w):  # keep NHWC downstream
            return w.expand(batch, -1, -1, -1).contiguous(memory_format=torch.channels_last)
        return w.expand(batch, -1, -1, -1)


class NormStyleCode(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)


class StyleGAN2DecoderSFT(nn.Module):
    """StyleGAN2 synthesis network whose first conv of each level is followed by an SFT (scale, shift) layer."""

    def __init__(self, cfg: GFPGANConfig):
        super().__init__()
        self.cfg = cfg
        feat = cfg.num_style_feat
        mlp: list[nn.Module] = [NormStyleCode()]
        for _ in range(cfg.num_mlp):
            mlp += [nn.Linear(feat, feat), nn.LeakyReLU(LRELU_SLOPE)]
        self.style_mlp = nn.Sequential(*mlp)
        ch = _decoder_channels(cfg, cfg.narrow)
        log_size = int(math.log2(cfg.out_size))
        self.num_layers = (log_size - 2) * 2 + 1
        self.num_latent = log_size * 2 - 2
        self.constant_input = ConstantInput(ch[4], 4)
        self.style_conv1 = StyleConv(ch[4], ch[4], feat, upsample=False)
        self.to_rgb1 = ToRGB(ch[4], feat)
        self.style_convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            side = 2 ** ((i + 5) // 2)  # 4, 8, 8, 16, 16, ...
            self.noises.register_buffer(f"noise{i}", torch.zeros(1, 1, side, side))
        c_in = ch[4]
        for level in range(3, log_size + 1):
            c_out = ch[2**level]
            self.style_convs.append(StyleConv(c_in, c_out, feat, upsample=True))
            self.style_convs.append(StyleConv(c_out, c_out, feat, upsample=False))
            self.to_rgbs.append(ToRGB(c_out, feat))
            c_in = c_out

    def _sft(self, x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        if not self.cfg.sft_half:
            return x * scale + shift
        half = x.shape[1] // 2
        if torch.compiler.is_compiling():
            # scale 1 / shift 0 on the first half as padded channels: x is read once, so inductor keeps the whole
            # conv epilogue in one kernel (two channel slices of x would make it store x first)
            return x * F.pad(scale, (0, 0, 0, 0, half, 0), value=1.0) + F.pad(shift, (0, 0, 0, 0, half, 0))
        return torch.cat([x[:, :half], x[:, half:] * scale + shift], dim=1)

    def forward(self, latent: Tensor, conditions: list[Tensor]) -> Tensor:
        """latent (B, num_latent, F); conditions [scale_8, shift_8, scale_16, ...] -> image (B,3,S,S)."""
        noise = [getattr(self.noises, f"noise{i}") for i in range(self.num_layers)]
        out = self.style_conv1(self.constant_input(latent.shape[0]), latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1], None)
        for level, to_rgb in enumerate(self.to_rgbs):
            i = 2 * level + 1  # latent index of this level's first conv
            out = self.style_convs[2 * level](out, latent[:, i], noise[i])
            if i < len(conditions):
                out = self._sft(out, conditions[i - 1], conditions[i])
            out = self.style_convs[2 * level + 1](out, latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
        return skip


class ResBlock(nn.Module):
    """conv3x3 -> lrelu -> bilinear resize -> conv3x3 -> lrelu, plus a resized 1x1 skip."""

    def __init__(self, c_in: int, c_out: int, factor: float):
        super().__init__()
        self.factor = factor
        self.conv1 = nn.Conv2d(c_in, c_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.baked: dict[str, Tensor] = {}  # conv2's upsampling kernels (`_upsample_kernels`), kept by bake()

    def bake(self, nhwc: bool) -> None:
        self.baked = _upsample_kernels(self.conv2.weight, nhwc) if self.factor == 2 else {}

    def forward(self, x: Tensor) -> Tensor:
        hidden = _lrelu(self.conv1(x))
        if self.factor == 2:
            out = _lrelu(upsample_conv3x3(hidden, self.conv2.weight, self.conv2.bias, **self.baked))
        else:
            out = _lrelu(self.conv2(_resize2x(hidden, self.factor)))
        # a 1x1 conv commutes with bilinear resizing: run it on the smaller of the two grids
        skip = self.skip(_resize2x(x, self.factor)) if self.factor < 1 else _resize2x(self.skip(x), self.factor)
        return out + skip


def _sft_branch(c: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.LeakyReLU(LRELU_SLOPE), nn.Conv2d(c, c_out, 3, 1, 1))


def _sft_weights(scale: nn.Sequential, shift: nn.Sequential) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The two SFT branches as one conv of twice the width (their first convs read the same input) and one
    2-group conv (no channel slices of the hidden features: they would be copied for the conv)."""
    return (torch.cat([scale[0].weight, shift[0].weight]), torch.cat([scale[0].bias, shift[0].bias]),
            torch.cat([scale[2].weight, shift[2].weight]), torch.cat([scale[2].bias, shift[2].bias]))


def _sft_conditions(feat: Tensor, weights: tuple[Tensor, Tensor, Tensor, Tensor]) -> list[Tensor]:
    """[scale(feat), shift(feat)] from `_sft_weights`: one pass over feat and wider, more efficient GEMMs."""
    w1, b1, w2, b2 = weights
    hidden = _lrelu(F.conv2d(feat, w1, b1, padding=1))
    out = F.conv2d(hidden, w2, b2, padding=1, groups=2)
    return list(out.split(w2.shape[0] // 2, dim=1))


def _conv1x1_few_inputs(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """A 1x1 conv from a few input channels (RGB) as a sum of broadcast products: under torch.compile one fused
    pointwise pass with what follows, where cuDNN runs a slow generic kernel for 3 input channels."""
    w = conv.weight[:, :, 0, 0]
    out = x[:, :1] * w[:, 0].view(1, -1, 1, 1)
    for i in range(1, w.shape[1]):
        out = out + x[:, i:i + 1] * w[:, i].view(1, -1, 1, 1)
    return out if conv.bias is None else out + conv.bias.view(1, -1, 1, 1)


class GFPGANv1Clean(nn.Module):
    """U-Net encoder -> (16 latents, SFT conditions per level) -> StyleGAN2 decoder with SFT."""

    def __init__(self, cfg: GFPGANConfig = V1_4):
        super().__init__()
        self.cfg = cfg
        ch = _decoder_channels(cfg, cfg.narrow * 0.5)  # the U-Net is half as wide as the decoder
        self.log_size = int(math.log2(cfg.out_size))
        self.conv_body_first = nn.Conv2d(3, ch[cfg.out_size], 1)
        self.conv_body_down = nn.ModuleList()
        c_in = ch[cfg.out_size]
        for level in range(self.log_size, 2, -1):
            self.conv_body_down.append(ResBlock(c_in, ch[2 ** (level - 1)], 0.5))
            c_in = ch[2 ** (level - 1)]
        self.final_conv = nn.Conv2d(c_in, ch[4], 3, 1, 1)
        self.conv_body_up = nn.ModuleList()
        c_in = ch[4]
        for level in range(3, self.log_size + 1):
            self.conv_body_up.append(ResBlock(c_in, ch[2**level], 2.0))
            c_in = ch[2**level]
        # intermediate RGB heads: used only in training, kept so official checkpoints load strictly
        self.toRGB = nn.ModuleList(nn.Conv2d(ch[2**level], 3, 1) for level in range(3, self.log_size + 1))
        n_latent = (self.log_size * 2 - 2) if cfg.different_w else 1
        self.final_linear = nn.Linear(ch[4] * 4 * 4, n_latent * cfg.num_style_feat)
        self.stylegan_decoder = StyleGAN2DecoderSFT(cfg)
        sft_mult = 1 if cfg.sft_half else 2
        self.condition_scale = nn.ModuleList(_sft_branch(ch[2**lv], ch[2**lv] * sft_mult)
                                             for lv in range(3, self.log_size + 1))
        self.condition_shift = nn.ModuleList(_sft_branch(ch[2**lv], ch[2**lv] * sft_mult)
                                             for lv in range(3, self.log_size + 1))
        self.sft_baked: list[tuple[Tensor, Tensor, Tensor, Tensor]] | None = None

    @torch.no_grad()  # constants: no autograd history (inference-mode callers could not use them otherwise)
    def bake(self, nhwc: bool) -> "GFPGANv1Clean":
        """Keep the weight-derived tensors (polyphase kernels, demodulation squares, merged SFT weights) instead of
        rebuilding them on every forward. Call after loading and moving the weights; `to()`/`half()` and
        `load_state_dict` drop them again (a stale copy would silently use old weights). `nhwc`: the layout the
        forward will see."""
        for m in self.modules():  # on CUDA this also imports the tap kernel, before any torch.compile trace
            if isinstance(m, (ModulatedConv2d, ResBlock)):
                m.bake(nhwc)
        self.sft_baked = [_sft_weights(a, b) for a, b in zip(self.condition_scale, self.condition_shift)]
        return self

    def unbake(self) -> None:
        for m in self.modules():
            if isinstance(m, (ModulatedConv2d, ResBlock)):
                m.baked = {}
        self.sft_baked = None

    def _apply(self, fn, recurse=True):  # every to()/half()/cuda() comes through here
        self.unbake()
        return super()._apply(fn, recurse)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self.unbake()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def use_grouped_conv(self, grouped: bool) -> None:
        """Switch every modulated conv to the official grouped form (reference / tests) or back to batched."""
        for m in self.modules():
            if isinstance(m, ModulatedConv2d):
                m.grouped = grouped

    def encode(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """x (B,3,S,S) in [-1,1] -> style code (B, n_latent*F) and SFT conditions [scale_8, shift_8, ...]."""
        first = self.conv_body_first
        feat = _lrelu(_conv1x1_few_inputs(x, first) if torch.compiler.is_compiling() else first(x))
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.append(feat)
        feat = _lrelu(self.final_conv(feat))
        style_code = self.final_linear(feat.flatten(1))
        conditions = []
        sft = self.sft_baked or [_sft_weights(a, b) for a, b in zip(self.condition_scale, self.condition_shift)]
        for block, weights, skip in zip(self.conv_body_up, sft, reversed(skips)):
            feat = block(feat + skip)
            conditions += _sft_conditions(feat, weights)
        return style_code, conditions

    def latents(self, style_code: Tensor) -> Tensor:
        """Style code -> (B, num_latent, F) per-layer latents."""
        dec, b = self.stylegan_decoder, style_code.shape[0]
        w = style_code.view(b, -1, self.cfg.num_style_feat) if self.cfg.different_w else style_code
        if not self.cfg.input_is_latent:
            w = dec.style_mlp(w)
        return w if w.ndim == 3 else w[:, None].expand(-1, dec.num_latent, -1)

    def forward(self, x: Tensor) -> Tensor:
        style_code, conditions = self.encode(x)
        return self.stylegan_decoder(self.latents(style_code), conditions)
