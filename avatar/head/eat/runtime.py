"""EAT runtime: the one checkpoint loader for the EAT networks and a batched, constant-memory renderer.

Files (under `eat_dir`, supplied by the user from the authors' release; see shared/reference/eat.md):
  ckpt/deepprompt_eam3d_all_final_313.pth.tar  generator, kp_detector, audio2kptransformer, sidetuning, emotionprompt
  ckpt/pretrain_new_274.pth.tar                he_estimator
  expPCAnorm_fin/U_mead.npy (45,45), expPCAnorm_fin/mean_mead.npy (45,)   expression PCA basis / mean
  pad.npy                                      [torch.FloatTensor(80) mel pad, float32 (16,29) DeepSpeech pad]

Typical use (shapes: N frames, B = batch):

    nets = load_eat_networks(Path("checkpoints/eat"), device="cuda", dtype=torch.bfloat16)
    renderer = EatRenderer(nets, batch_size=16)
    state = renderer.prepare(source_image, y_trg=4, z_trg=z)        # (1,3,256,256) [0,1], int, (1,16)
    frames_in = EatFrameInputs(mel=mel, pose=pose_imgs, deep=deep,                 # float32 CPU tensors
                               pad_mel=nets.pad_mel.cpu(), pad_deep=nets.pad_deep.cpu())
    he = {"yaw": (N,66), "pitch": (N,66), "roll": (N,66), "t": (N,3)}
    for batch in renderer.render_frames(state, he, frames_in):      # uint8 (B,256,256,3) RGB
        ...

Memory does not grow with N: windows are built per chunk from the per-frame arrays, keypoints of the whole clip
are (N,15,3) floats (the official clip-wide keypoint re-centring needs them all before the first frame), and
the generator runs on `batch_size` frames at a time.
"""
from __future__ import annotations

import io
import logging
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from avatar.core.compiled import compiled as compiled_network
from avatar.core.devices import fp32_precision
from avatar.core.errors import WeightsError
from avatar.core.host_copy import host_batches
from models.eat import PART_CLASSES
from models.eat.keypoints import align_driving, convex_hull_volume, expression_from_pca, transform_keypoints

from .prep import deep_windows, mel_windows, pose_window_indices, window_indices

log = logging.getLogger("avatar.head.eat.engine")

EAT_CKPT = Path("ckpt/deepprompt_eam3d_all_final_313.pth.tar")
PRETRAIN_CKPT = Path("ckpt/pretrain_new_274.pth.tar")
PCA_U = Path("expPCAnorm_fin/U_mead.npy")
PCA_MEAN = Path("expPCAnorm_fin/mean_mead.npy")
PAD = Path("pad.npy")
EAT_FILES = (EAT_CKPT, PRETRAIN_CKPT, PCA_U, PCA_MEAN, PAD)
EAT_PARTS = ("generator", "kp_detector", "audio2kptransformer", "sidetuning", "emotionprompt")
PRETRAIN_PARTS = ("he_estimator",)
NUM_PCA = 32  # expression PCA coefficients used (U[:, :32])


# ----------------------------------------------------------------------------------------------- loading
@dataclass
class EatNetworks:
    """All EAT networks (eval mode, on `device`) plus the constant tables.

    The generator's weights are in `dtype` (float16/bfloat16 for speed on GPU); every other network stays
    float32 (they cost < 2 % of a frame and the keypoint path is numerically sensitive).
    """

    generator: nn.Module
    kp_detector: nn.Module
    he_estimator: nn.Module
    audio2kp: nn.Module
    sidetuning: nn.Module
    emotionprompt: nn.Module
    pca_u32: torch.Tensor  # (45, 32) float32, U_mead[:, :32]
    pca_mean: torch.Tensor  # (45,) float32
    pad_mel: torch.Tensor  # (80,) float32, mel column used outside the audio
    pad_deep: torch.Tensor  # (16, 29) float32, DeepSpeech window used outside the audio
    device: torch.device
    dtype: torch.dtype


def eat_files(eat_dir: Path) -> list[Path]:
    """The five files load_eat_networks reads."""
    return [Path(eat_dir) / f for f in EAT_FILES]


def missing_eat_files(eat_dir: Path) -> list[Path]:
    """The files of eat_files() that do not exist (nothing is loaded)."""
    return [p for p in eat_files(eat_dir) if not p.is_file()]


def _torch_load(path: Path) -> dict:
    # The official .pth.tar hold only dicts of tensors, optimizer state dicts and ints: weights_only works.
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad/foreign file
        raise WeightsError(f"cannot read EAT checkpoint {path}: {e}") from e
    if not isinstance(obj, dict):
        raise WeightsError(f"EAT checkpoint {path} is not a dict of state_dicts")
    return obj


class _PadUnpickler(pickle.Unpickler):
    """Unpickler for pad.npy that only rebuilds numpy arrays and torch tensors (no arbitrary callables)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor"), ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle API
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _storage_from_bytes
        if (module, name) in self._ALLOWED or (module == "torch" and name.endswith("Storage")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"pad.npy: refusing to load {module}.{name}")


def _storage_from_bytes(b: bytes):  # noqa: ANN202 - torch storage
    return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)


def load_pad(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """pad.npy -> (mel pad (80,), DeepSpeech pad (16, 29)), float32.

    The official file is a pickled numpy object array holding a torch.FloatTensor and an ndarray, i.e. it
    needs np.load(allow_pickle=True), which would run arbitrary pickled code. Instead the .npy header is
    parsed and the payload unpickled with a whitelist (numpy array rebuild, torch tensor rebuild only).
    A plain float .npy is accepted too.
    """
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        _, _, dtype = read_header(f)  # public API (numpy 1.x and 2.x); never unpickles
        if dtype.hasobject:
            arr = _PadUnpickler(f).load()
        else:
            f.seek(0)
            arr = np.load(f, allow_pickle=False)
    try:
        mel = torch.as_tensor(np.asarray(arr[0], dtype=np.float32)).reshape(80)
        deep = torch.as_tensor(np.asarray(arr[1], dtype=np.float32)).reshape(16, 29)
    except (IndexError, ValueError, RuntimeError, TypeError) as e:
        raise WeightsError(f"{path}: expected [mel pad (80,), DeepSpeech pad (16,29)]: {e}") from e
    return mel, deep


def _load_part(name: str, state: dict, source: Path) -> nn.Module:
    net = PART_CLASSES[name]()
    if not isinstance(state, dict):
        raise WeightsError(f"{source}: part '{name}' is not a state_dict")
    missing, unexpected = _key_diff(net, state)
    if missing or unexpected:
        raise WeightsError(f"{source}: '{name}' does not match the EAT network: "
                           f"missing keys {missing[:20]}{' ...' if len(missing) > 20 else ''}, "
                           f"unexpected keys {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:  # shape mismatches
        raise WeightsError(f"{source}: '{name}': {e}") from e
    return net.eval()


def _key_diff(net: nn.Module, state: dict) -> tuple[list[str], list[str]]:
    own = set(net.state_dict())
    return sorted(own - set(state)), sorted(set(state) - own)


def build_eat_networks(parts: dict[str, dict[str, torch.Tensor]], pca_u: np.ndarray, pca_mean: np.ndarray,
                       pad_mel: torch.Tensor, pad_deep: torch.Tensor, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32, source: Path = Path("<memory>")) -> EatNetworks:
    """Networks from in-memory state_dicts {part: state_dict} (all six parts), strict; built on CPU fp32, then
    moved once (generator to `dtype`, the rest float32)."""
    absent = [p for p in EAT_PARTS + PRETRAIN_PARTS if p not in parts]
    if absent:
        raise WeightsError(f"{source}: missing network parts {absent}")
    nets = {name: _load_part(name, parts[name], source) for name in EAT_PARTS + PRETRAIN_PARTS}
    dev = torch.device(device)
    for name, net in nets.items():
        net.to(device=dev, dtype=dtype if name == "generator" else torch.float32)
        net.requires_grad_(False)
    u = np.asarray(pca_u, dtype=np.float32)
    if u.ndim != 2 or u.shape[0] != 45 or u.shape[1] < NUM_PCA or np.asarray(pca_mean).shape != (45,):
        raise WeightsError(f"expression PCA must be U (45, >=32) and mean (45,), got {u.shape}, "
                           f"{np.asarray(pca_mean).shape}")
    return EatNetworks(
        generator=nets["generator"], kp_detector=nets["kp_detector"], he_estimator=nets["he_estimator"],
        audio2kp=nets["audio2kptransformer"], sidetuning=nets["sidetuning"], emotionprompt=nets["emotionprompt"],
        pca_u32=torch.from_numpy(np.ascontiguousarray(u[:, :NUM_PCA])).to(dev),
        pca_mean=torch.from_numpy(np.asarray(pca_mean, dtype=np.float32)).to(dev),
        pad_mel=pad_mel.float().to(dev), pad_deep=pad_deep.float().to(dev), device=dev, dtype=dtype)


def load_eat_networks(eat_dir: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
                      ) -> EatNetworks:
    """Load every EAT network and table from `eat_dir` (layout in the module docstring).

    Raises WeightsError listing missing files, or missing/unexpected keys per network.
    """
    eat_dir = Path(eat_dir)
    missing = missing_eat_files(eat_dir)
    if missing:
        raise WeightsError("EAT files missing: " + ", ".join(str(p) for p in missing))
    main = _torch_load(eat_dir / EAT_CKPT)
    pre = _torch_load(eat_dir / PRETRAIN_CKPT)
    parts = {p: main.get(p) for p in EAT_PARTS if p in main}
    parts.update({p: pre.get(p) for p in PRETRAIN_PARTS if p in pre})
    pad_mel, pad_deep = load_pad(eat_dir / PAD)
    pca_u = np.load(eat_dir / PCA_U, allow_pickle=False)
    pca_mean = np.load(eat_dir / PCA_MEAN, allow_pickle=False)
    return build_eat_networks(parts, pca_u, pca_mean, pad_mel, pad_deep, device, dtype, source=eat_dir)


# ----------------------------------------------------------------------------------------------- inputs
@dataclass
class EatFrameInputs:
    """Per-frame driving features (not yet windowed), float32 CPU tensors.

    mel: (80, M) normalised log-mel columns, one per 25 fps frame ((log(mel + 1e-5) + 4) / 4).
    pose: (P, 1, 64, 64) pose images; deep: (D, 16, 29) DeepSpeech windows. N = min(M, P, D) frames.
    pad_mel (80,), pad_deep (16, 29): from pad.npy (EatNetworks.pad_mel / pad_deep).
    """

    mel: torch.Tensor
    pose: torch.Tensor
    deep: torch.Tensor
    pad_mel: torch.Tensor
    pad_deep: torch.Tensor

    @property
    def num_frames(self) -> int:
        return min(self.mel.shape[1], self.pose.shape[0], self.deep.shape[0])


def window_chunk(inputs: EatFrameInputs, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Windows of frames [start, stop): mel (B,1,80,11), pose (B,11,1,64,64), deep (B,11,16,29).

    Official rule: frame r uses r-5..r+5; outside [0, N) the mel/DeepSpeech pads are used and the pose is
    the first (before) or the last (after) pose image of the whole pose array.
    """
    n, frames = inputs.num_frames, range(start, stop)
    idx = window_indices(frames, n)
    mel = mel_windows(inputs.mel.numpy(), inputs.pad_mel.numpy(), idx)[0]
    deep = deep_windows(inputs.deep.numpy(), inputs.pad_deep.numpy(), idx)[0]
    pose = inputs.pose[torch.from_numpy(pose_window_indices(frames, n, inputs.pose.shape[0]))]
    return torch.from_numpy(mel), pose, torch.from_numpy(deep)


# ----------------------------------------------------------------------------------------------- rendering
@dataclass
class SourceState:
    """Everything that depends only on the source image and the emotion (computed once per clip)."""

    he_source: dict[str, torch.Tensor]  # yaw/pitch/roll (1,66), t (1,3), exp (1,45)
    kp_canonical: torch.Tensor  # (1,15,3)
    prediction_map: torch.Tensor  # (1,15,16,64,64) kp_detector pre-softmax heatmaps
    source_area: float  # ConvexHull volume of kp_canonical[0]
    kp_source: torch.Tensor  # (1,15,3)
    emoprompt: torch.Tensor  # (1,128)
    deepprompt: torch.Tensor  # (1,6,128)
    face: torch.Tensor  # (1,32,64,64) emotion-modulated face feature map (audio2kp / sidetuning input)
    sidetuning_out: torch.Tensor  # (1,45) EDN expression offset (same for every frame)
    feature_3d: torch.Tensor  # (1,32,16,64,64) generator source volume (generator dtype)


def frames_to_uint8(prediction: torch.Tensor) -> np.ndarray:
    """(B,3,H,W) in [0,1] -> (B,H,W,3) uint8, truncating like the official `(x * 255).astype(np.uint8)`."""
    return _uint8_frames(prediction).cpu().numpy()


def _uint8_frames(prediction: torch.Tensor) -> torch.Tensor:
    """The same conversion, left on the prediction's device (4x fewer bytes to copy to the host)."""
    return (prediction.float() * 255).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """Pads the first dimension to `rows` by repeating the last row."""
    n = t.shape[0]
    return t if n >= rows else torch.cat([t, t[-1:].expand(rows - n, *t.shape[1:])])


def _fresh(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy with canonical strides (contiguous() keeps odd strides of size-1 dimensions)."""
    return t.clone(memory_format=torch.contiguous_format)


def _headpose_slice(he: dict[str, torch.Tensor], start: int, stop: int, device: torch.device) -> dict:
    return {k: _frames_first(v)[start:stop].to(device=device, dtype=torch.float32) for k, v in he.items()}


def _frames_first(v: torch.Tensor) -> torch.Tensor:
    """Accept (N,66)/(N,3) or the demo's (1,N,66)/(1,N,3)."""
    return v[0] if v.dim() == 3 else v


def _to_channels_last(gen: nn.Module) -> None:
    """NHWC / NDHWC weights for the per-frame convs: cuDNN's fastest tensor-core kernels want them, and
    activations follow the weights' layout."""
    for mod in gen.modules():
        if isinstance(mod, nn.Conv3d):
            mod.to(memory_format=torch.channels_last_3d)
        elif isinstance(mod, nn.Conv2d):
            mod.to(memory_format=torch.channels_last)
    for mod in gen.decoder.modules():  # spectral-norm convs keep weight_orig as a bare parameter
        if hasattr(mod, "weight_orig"):
            mod.weight_orig.data = mod.weight_orig.data.contiguous(memory_format=torch.channels_last)


def tf32_math(enabled: bool = True):
    """TF32 tensor-core math for float32 convs inside the block; the previous setting is restored. float32 matmuls
    stay IEEE (they are a small part of audio2kp's work): cuBLAS' TF32 switch is one of torch.compile's global guards,
    so flipping it in one thread made compiled networks called meanwhile from other threads (ray mode renders
    sessions in threads of one replica) recompile, and a compile in one thread breaks compiled calls in the others."""
    return fp32_precision([torch.backends.cudnn.conv], "tf32" if enabled else None)


class EatRenderer:
    """Runs steps 2-8 of the EAT inference flow on prepared tensors.

    batch_size: generator frames per batch; a2kp_batch: frames per audio2kp call (frames are independent
    in eval, so this only trades speed for memory; the official demo uses 5). channels_last: NHWC/NDHWC
    generator weights (GPU speed). compile: torch.compile the per-frame generator part (short batches are
    padded to batch_size so one graph serves a whole clip). fast: the generator's inference forms (polyphase / fused
    SPADE layers, about 100 GFLOP per frame less; planar 3-D convs in the dense motion network: 284 -> 351
    frames/s on an H100); equal to the official order up to fp32 rounding, covered by the parity test. tf32: TF32
    convs in the float32 networks (tf32_math; audio2kp is ~20 GFLOP per frame, 99% of it convs; on an H100 a 10 s
    clip took 1.12 s without and 0.87 s with TF32, measured when the block still covered matmuls too); default: on
    when the generator itself runs in reduced precision on CUDA (the GPU PSNR test covers it). compile_keypoints:
    torch.compile audio2kp too (its chunks are padded to a2kp_batch like the generator's batches); on an H200 it
    cut a 10 s clip's keypoints from 0.156 to 0.099 s (clip RTF 0.0745 -> 0.0682, `bench_eat.py
    --compile-keypoints`, same call); the app turns it on with [head] compile on CUDA.
    """

    def __init__(self, nets: EatNetworks, batch_size: int = 16, a2kp_batch: int = 5, channels_last: bool = False,
                 compile: bool = False, fast: bool = True, tf32: bool | None = None, freezing: bool = False,
                 compile_keypoints: bool = False, autotune: bool = False):
        self.nets = nets
        self.tf32 = tf32 if tf32 is not None else nets.device.type == "cuda" and nets.dtype != torch.float32
        self.batch_size = batch_size
        self.a2kp_batch = a2kp_batch
        gen = nets.generator
        gen.set_fast(fast)
        if channels_last:
            _to_channels_last(gen)
        # Compiled graphs and cuDNN's tuned kernels are specialised to shapes: on CUDA every generator batch and
        # audio2kp chunk is padded to one size (see frame_batches, driving_keypoints); a compiled audio2kp pads its
        # chunks on the CPU too.
        self.compiled, self.keypoints_compiled = compile, compile_keypoints
        self.fixed_shapes = compile or nets.device.type == "cuda"
        self.fixed_chunks = self.fixed_shapes or compile_keypoints
        # freezing: the compiled graph takes the weights as constants and folds BatchNorm into the convs; off by
        # default: +2-4 % frames/s for +0.1-2.4 GB peak memory on an H200 (bf16, batch 32; README "Measured speed")
        # autotune: inductor's max-autotune for the generator's convs and matmuls (its Triton convs next to cuDNN's,
        # each timed at compile time; minutes longer to compile): the 7x7 motion-mask conv took 5.9 ms as a Triton
        # conv vs 7.7 ms in cuDNN on an H200 (bf16, batch 32, scripts/bench_eat_convs.py); off until the whole
        # generator is measured with it (bench_eat.py --autotune)
        options = {"freezing": freezing} | ({"max_autotune": True} if autotune else {})
        # compiled_network: calls from several threads (sessions) never meet a compile (avatar.core.compiled)
        self._render = compiled_network(gen.render, dynamic=False, options=options) if compile else gen.render
        self._audio2kp = compiled_network(nets.audio2kp, dynamic=False) if compile_keypoints else nets.audio2kp

    def warm_up(self) -> None:
        """With compile: build the compiled graphs now (start-up), not in the first render: one batch of
        batch_size frames from a blank source, and one audio2kp chunk of silence when that is compiled too."""
        if not (self.compiled or self.keypoints_compiled):
            return
        t0 = time.perf_counter()
        log.info("compiling the EAT networks (torch.compile, one to two minutes) ...")
        try:
            state = self.prepare(torch.full((1, 3, 256, 256), 0.5), 0, torch.zeros(1, 16))
            if self.compiled:
                self.generate(state, state.kp_source.repeat(self.batch_size, 1, 1))  # contiguous, as real batches
            if self.keypoints_compiled:
                self._blank_chunk(state)
        except Exception:  # renders run the eager networks instead: slower, nothing lost
            log.warning("EAT warm-up (torch.compile) failed; the networks run uncompiled", exc_info=True)
            self._render, self._audio2kp = self.nets.generator.render, self.nets.audio2kp
            self.compiled = self.keypoints_compiled = False
            return
        log.info("EAT networks compiled in %.0f s", time.perf_counter() - t0)

    @torch.inference_mode()
    def _blank_chunk(self, state: SourceState) -> torch.Tensor:
        """One audio2kp chunk of a2kp_batch silent frames (expression_coeffs gives the compiled call fresh
        contiguous inputs, so this graph is the one real chunks use)."""
        n = self.a2kp_batch
        headpose = {k: torch.zeros(n, 66) for k in ("yaw", "pitch", "roll")} | {"t": torch.zeros(n, 3)}
        return self.expression_coeffs(state, torch.zeros(n, 1, 80, 11), torch.zeros(n, 11, 1, 64, 64),
                                      torch.zeros(n, 11, 16, 29), headpose)

    # -- per source / emotion
    @torch.inference_mode()
    def source_latent(self, source_image: torch.Tensor) -> dict[str, torch.Tensor | float]:
        """source (1,3,256,256) [0,1] -> he_source dict, kp_canonical (1,15,3), prediction_map, area, kp_source."""
        x = source_image.to(self.nets.device, torch.float32)
        with tf32_math(self.tf32):
            he = self.nets.he_estimator(x)
            kp = self.nets.kp_detector(x)
        area = convex_hull_volume(kp["value"][0].double().cpu().numpy())
        kp_source = transform_keypoints(kp["value"], he["yaw"], he["pitch"], he["roll"], he["t"], he["exp"])
        return {"he_source": he, "kp_canonical": kp["value"], "prediction_map": kp["prediction_map"],
                "source_area": area, "kp_source": kp_source}

    @torch.inference_mode()
    def emotion_prompts(self, y_trg: int | torch.Tensor, z_trg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """emotion index 0..7 (avatar.core.types.EMOTIONS order), z_trg (1,16) -> emoprompt (1,128), deepprompt (1,6,128)."""
        y = torch.as_tensor(y_trg, dtype=torch.long, device=self.nets.device).reshape(1)
        return self.nets.emotionprompt(z_trg.to(self.nets.device, torch.float32).reshape(1, -1), y)

    @torch.inference_mode()
    def prepare(self, source_image: torch.Tensor, y_trg: int | torch.Tensor, z_trg: torch.Tensor) -> SourceState:
        """Source image (1,3,256,256) [0,1] + emotion -> SourceState (steps 2-3 and the per-clip constants)."""
        lat = self.source_latent(source_image)
        return self.clip_state(source_image, lat, *self.emotion_prompts(y_trg, z_trg))

    @torch.inference_mode()
    def clip_state(self, source_image: torch.Tensor, latent: dict, emoprompt: torch.Tensor,
                   deepprompt: torch.Tensor) -> SourceState:
        """Source image + its source_latent() dict + prompts -> SourceState (the per-clip constants)."""
        nets = self.nets
        with tf32_math(self.tf32):
            face = nets.audio2kp.face_feature(latent["prediction_map"], emoprompt)
            side = nets.sidetuning(face, emoprompt, deepprompt)
            feature_3d = nets.generator.encode_source(source_image.to(nets.device), emoprompt)
        return SourceState(emoprompt=emoprompt, deepprompt=deepprompt, face=face, sidetuning_out=side,
                           feature_3d=feature_3d, **latent)

    # -- keypoints (steps 4-7)
    @torch.inference_mode()
    def expression_coeffs(self, state: SourceState, mel: torch.Tensor, pose: torch.Tensor, deep: torch.Tensor,
                          headpose: dict[str, torch.Tensor]) -> torch.Tensor:
        """Windows of B frames (mel (B,1,80,11), pose (B,11,1,64,64), deep (B,11,16,29)), headpose
        yaw/pitch/roll (B,66), t (B,3) -> a2kp PCA coefficients 'emo' (B,32)."""
        dev = self.nets.device
        mel, pose, deep = (t.to(dev, torch.float32) for t in (mel, pose, deep))
        if self.keypoints_compiled:  # fresh contiguous copies on the device: the compiled graph's guards check
            mel, pose, deep = (_fresh(t) for t in (mel, pose, deep))  # strides and dispatch keys too
            headpose = {k: _fresh(v.to(dev, torch.float32)) for k, v in headpose.items()}
        with tf32_math(self.tf32):
            return self._audio2kp(mel, pose, deep, headpose, state.face, state.emoprompt, state.deepprompt)

    def expression(self, state: SourceState, emo: torch.Tensor) -> torch.Tensor:
        """emo (B,32) -> exp (B,45) = (emo U^T + mean + EDN offset) * source hull volume."""
        side = state.sidetuning_out.expand(emo.shape[0], -1)
        return expression_from_pca(emo, side, self.nets.pca_u32, self.nets.pca_mean, state.source_area)

    @torch.inference_mode()
    def driving_keypoints(self, state: SourceState, he_driving: dict[str, torch.Tensor], num_frames: int,
                          windows: Callable[[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
                          ) -> torch.Tensor:
        """All frames' driving keypoints (N,15,3), re-centred on the source keypoints like the official code.

        windows(start, stop) returns the (mel, pose, deep) windows of frames [start, stop).
        """
        kps = []
        for start in range(0, num_frames, self.a2kp_batch):
            stop = min(start + self.a2kp_batch, num_frames)
            hp = _headpose_slice(he_driving, start, stop, self.nets.device)
            mel, pose, deep = windows(start, stop)
            if self.fixed_chunks:  # one shape for every chunk: no cuDNN re-tuning for the clip's last chunk
                hp, mel, pose, deep = ({k: _pad_rows(v, self.a2kp_batch) for k, v in hp.items()},
                                       *(_pad_rows(t, self.a2kp_batch) for t in (mel, pose, deep)))
            emo = self.expression_coeffs(state, mel, pose, deep, hp)
            exp = self.expression(state, emo)
            kp = transform_keypoints(state.kp_canonical, hp["yaw"], hp["pitch"], hp["roll"], hp["t"], exp)
            kps.append(kp[: stop - start])  # frames are independent in eval: padded rows are dropped
        return align_driving(torch.cat(kps), state.kp_source)

    # -- frames (step 8)
    @torch.inference_mode()
    def generate(self, state: SourceState, kp_driving: torch.Tensor) -> dict[str, torch.Tensor]:
        """kp_driving (B,15,3) -> generator outputs: prediction (B,3,256,256) [0,1], mask (B,16,16,64,64),
        deformation (B,16,64,64,3), occlusion_map (B,1,64,64)."""
        kp_driving = kp_driving.to(self.nets.device)
        if self.compiled:  # a fresh tensor made here: a slice taken outside inference mode (frame batches) carries
            kp_driving = _fresh(kp_driving)  # another dispatch key set, and the compiled graph guards on it
        return self._render(state.feature_3d, state.kp_source, kp_driving)

    def frame_batches(self, state: SourceState, kp_driving: torch.Tensor) -> Iterator[np.ndarray]:
        """Yield uint8 (B,256,256,3) RGB batches of `batch_size` frames (the last one may be shorter). On CUDA the
        copy of batch i to the host overlaps the generator's work on batch i+1 (avatar.core.host_copy)."""
        return host_batches(self.device_frame_batches(state, kp_driving))

    def device_frame_batches(self, state: SourceState, kp_driving: torch.Tensor) -> Iterator[torch.Tensor]:
        """The same uint8 (B,256,256,3) batches, left on the generator's device."""
        for start in range(0, kp_driving.shape[0], self.batch_size):
            kp = kp_driving[start:start + self.batch_size]
            n = kp.shape[0]
            if self.fixed_shapes and n < self.batch_size:
                kp = _pad_rows(kp, self.batch_size)
            yield _uint8_frames(self.generate(state, kp)["prediction"][:n])

    def render_frames(self, state: SourceState, he_driving: dict[str, torch.Tensor], inputs: EatFrameInputs
                      ) -> Iterator[np.ndarray]:
        """Constant-memory path: per-frame inputs -> uint8 (B,256,256,3) batches."""
        n = min(inputs.num_frames, _frames_first(he_driving["yaw"]).shape[0])
        kp = self.driving_keypoints(state, he_driving, n, lambda a, b: window_chunk(inputs, a, b))
        yield from self.frame_batches(state, kp)
