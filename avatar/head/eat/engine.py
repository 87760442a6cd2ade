"""The "eat" talking-head engine: EAT (ICCV 2023) with the official checkpoints, behind the TalkingHead interface.

    engine = EatEngine.load(config)              # networks + DeepSpeech graph, once
    face = engine.prepare(photo)                 # aligned 256 crop + source latents (cached on the face)
    for batch in engine.frames(face, speech, "happy", pose):   # uint8 (B,256,256,3), n_frames(duration) in all
        ...

Per clip: speech -> 16 kHz -> normalised log-mel (one column per frame) and DeepSpeech windows (whole clip: the
standardisation and the BiLSTM are clip-wide); the pose sequence -> 66-bin logits; windows and pose images are
made per batch of frames (prep.py), keypoints for all frames (the official clip-wide re-centring needs
them), then the generator runs `head.batch_size` frames at a time (runtime.py).

Choices:
- Head pose: the PoseSequence holds offsets (degrees, EAT t units) around a neutral pose; they are added to the
  photo's own pose (he_estimator of the crop), so a still sequence keeps the photo's pose and the others move
  around it (EAT itself copies a driving video's absolute pose).
- Frame count: n_frames(duration) frames; streams shorter than that (DeepSpeech gives one window fewer for an odd
  number of 20 ms steps) are covered by pad.npy's pads, as the official demo does past its `name_len`.
- z_trg (the emotion style noise) is drawn from `head.seed`: the same inputs and seed give the same video.
- intensity: 1 is the official emotion prompt; below 1 the emotion prompts are blended linearly towards the
  neutral prompt (0 = neutral), a cheap continuous control EAT does not have itself.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from avatar.core import devices
from avatar.core.config import AvatarConfig
from avatar.core.errors import AvatarError
from avatar.core.media import resample
from avatar.core.types import EMOTIONS, Audio, PoseSequence, check_emotion
from avatar.core.validate import finite_number

from ..base import PreparedFace, n_frames
from ..face import prepare_face
from .deepspeech import DEEPSPEECH_FILE, DeepSpeech
from .deepspeech_torch import TorchDeepSpeech
from .prep import SAMPLE_RATE, FeatureStreams, PoseLogits, logits_to_degrees, mel_spectrogram, pose_logits_from_degrees
from .runtime import EatNetworks, EatRenderer, SourceState, load_eat_networks, missing_eat_files

log = logging.getLogger("avatar")

TEMPLATE_FILE = Path("demo/M003_template.npy")  # optional: without it the vox-style crop is used
SIZE = 256
LATENT_DIM = 16  # z_trg


def eat_missing_files(cfg: AvatarConfig) -> list[Path]:
    """Required EAT files (checkpoints, PCA, pads, DeepSpeech graph) that are absent; [] = "eat" can run."""
    eat_dir = cfg.weights_path(cfg.head.eat_dir)
    missing = missing_eat_files(eat_dir)
    ds = eat_dir / DEEPSPEECH_FILE
    return missing + ([] if ds.is_file() else [ds])


def resolve_device(device: str) -> torch.device:
    return torch.device(devices.resolve_device(device))


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    return devices.resolve_dtype(dtype, device)  # auto: bf16 on CUDA (parity at PSNR >= 35 dB), fp32 on CPU


def tensorflow_importable() -> bool:
    """Whether `import tensorflow` can work, without importing it (seconds, and gigabytes on some machines)."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def deepspeech_backend(choice: str, device: torch.device) -> str:
    """[head] deepspeech -> "tensorflow" or "torch": auto keeps TensorFlow on the CPU where it is installed (the
    graph as EAT ran it) and takes the PyTorch port elsewhere (a GPU, or no TensorFlow)."""
    name = (choice or "auto").strip().lower()
    if name not in ("auto", "tensorflow", "torch"):
        raise AvatarError(f"[head] deepspeech = {choice!r} is not one of: 'auto', 'tensorflow', 'torch'")
    if name != "auto":
        return name
    return "tensorflow" if device.type == "cpu" and tensorflow_importable() else "torch"


def load_deepspeech(path: Path, choice: str, device: torch.device) -> DeepSpeech | TorchDeepSpeech:
    """The DeepSpeech v0.1.0 graph through TensorFlow (CPU) or the PyTorch port (float32 on `device`)."""
    if deepspeech_backend(choice, device) == "tensorflow":
        return DeepSpeech.load(path)
    return TorchDeepSpeech.load(path, device=device)


def seeded_z(seed: int) -> torch.Tensor:
    """z_trg (1,16) from a seed, independent of the global torch RNG."""
    return torch.randn(1, LATENT_DIM, generator=torch.Generator().manual_seed(int(seed)))


def driving_pose(he_source: dict[str, torch.Tensor], pose: PoseSequence, n: int) -> PoseLogits:
    """The photo's pose plus the sequence's offsets for n frames (the sequence is held / cut to n)."""
    rows = np.minimum(np.arange(n), len(pose) - 1)
    src_deg = np.array([logits_to_degrees(he_source[k].float().cpu().numpy())[0] for k in ("yaw", "pitch", "roll")])
    src_t = he_source["t"].float().cpu().numpy().reshape(3)
    return pose_logits_from_degrees(src_deg + pose.angles_deg[rows], src_t + pose.translation[rows])


def _pose_tensors(pose: PoseLogits) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(getattr(pose, k))) for k in ("yaw", "pitch", "roll", "t")}


class EatEngine:
    """TalkingHead "eat" (256x256 frames)."""

    name = "eat"
    size = SIZE

    def __init__(self, cfg: AvatarConfig, nets: EatNetworks, deepspeech: DeepSpeech | TorchDeepSpeech,
                 template68: np.ndarray | None):
        self.cfg = cfg
        self.nets = nets
        self.device = str(nets.device)
        self.deepspeech = deepspeech
        self.template68 = template68
        cuda = nets.device.type == "cuda"
        self.renderer = EatRenderer(nets, batch_size=cfg.head.batch_size, a2kp_batch=max(5, cfg.head.batch_size),
                                    channels_last=cuda, compile=cfg.head.compile and cuda,
                                    compile_keypoints=cfg.head.compile and cuda)
        self.renderer.warm_up()
        self.fallback_reason: str | None = None

    @classmethod
    def load(cls, cfg: AvatarConfig) -> "EatEngine":
        eat_dir = cfg.weights_path(cfg.head.eat_dir)
        device = resolve_device(cfg.device)
        dtype = resolve_dtype(cfg.head.dtype, device)
        nets = load_eat_networks(eat_dir, device=device, dtype=dtype)
        deepspeech = load_deepspeech(eat_dir / DEEPSPEECH_FILE, cfg.head.deepspeech, nets.device)
        template_path = eat_dir / TEMPLATE_FILE
        template = np.load(template_path, allow_pickle=False).astype(np.float32) if template_path.is_file() else None
        if template is None:
            log.info("EAT: %s not found; using the vox-style crop", template_path)
        log.info("EAT engine on %s (generator %s, DeepSpeech %s)", device, str(dtype).replace("torch.", ""),
                 "TensorFlow on the CPU" if isinstance(deepspeech, DeepSpeech) else f"PyTorch on {nets.device}")
        return cls(cfg, nets, deepspeech, template)

    # ------------------------------------------------------------ per photo
    def prepare(self, photo: np.ndarray) -> PreparedFace:
        """Photo -> aligned 256 crop (EAT's template when present) + source latents in cache['eat_*']."""
        face = prepare_face(photo, size=SIZE, limits=self.cfg.limits, template68=self.template68)
        self._latent(face)
        return face

    def _latent(self, face: PreparedFace) -> tuple[torch.Tensor, dict[str, Any]]:
        if "eat_latent" not in face.cache:  # once per face (also one prepared by another engine: same crop rule)
            source = torch.from_numpy(np.ascontiguousarray(face.crop)).permute(2, 0, 1).unsqueeze(0).float() / 255
            face.cache["eat_source"], face.cache["eat_latent"] = source, self.renderer.source_latent(source)
        return face.cache["eat_source"], face.cache["eat_latent"]

    @torch.inference_mode()
    def prompts(self, emotion: str, intensity: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """emoprompt (1,128), deepprompt (1,6,128) for the emotion with z_trg from head.seed; intensity < 1 blends
        both linearly towards the neutral prompts (0 = neutral)."""
        z = seeded_z(self.cfg.head.seed)
        emoprompt, deepprompt = self.renderer.emotion_prompts(EMOTIONS.index(emotion), z)
        w = finite_number(intensity, "intensity", 0.0, 1.0)  # NaN would spread through every frame
        if w < 1.0 and emotion != "neutral":
            neutral = self.renderer.emotion_prompts(EMOTIONS.index("neutral"), z)
            emoprompt = torch.lerp(neutral[0], emoprompt, w)
            deepprompt = torch.lerp(neutral[1], deepprompt, w)
        return emoprompt, deepprompt

    @torch.inference_mode()
    def source_state(self, face: PreparedFace, emotion: str, intensity: float = 1.0) -> SourceState:
        """Per-clip constants (EatRenderer.prepare's SourceState) from the cached latents and the emotion."""
        source, lat = self._latent(face)
        return self.renderer.clip_state(source, lat, *self.prompts(emotion, intensity))

    # ------------------------------------------------------------ per clip
    def feature_streams(self, speech: Audio, pose: PoseLogits) -> FeatureStreams:
        """Speech (any rate) + driving pose -> the clip's mel, DeepSpeech windows and pads."""
        wave = resample(speech, SAMPLE_RATE).samples
        return FeatureStreams(mel=mel_spectrogram(wave), deep=self.deepspeech.windows(wave), pose=pose,
                              pad_mel=self.nets.pad_mel.cpu().numpy(), pad_deep=self.nets.pad_deep.cpu().numpy())

    def frames(self, face: PreparedFace, speech: Audio, emotion: str, pose: PoseSequence,
               intensity: float = 1.0) -> Iterator[np.ndarray]:
        """uint8 (B,256,256,3) RGB batches at 25 fps, n_frames(speech.duration_s) frames in all."""
        emotion = check_emotion(emotion)
        n = n_frames(speech.duration_s)
        state = self.source_state(face, emotion, intensity)
        streams = self.feature_streams(speech, driving_pose(state.he_source, pose, n))

        def windows(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            w = streams.windows(start, stop)
            return torch.from_numpy(w["mel"][0]), torch.from_numpy(w["pose"]), torch.from_numpy(w["deep"][0])

        kp_driving = self.renderer.driving_keypoints(state, _pose_tensors(streams.pose), n, windows)
        yield from self.renderer.frame_batches(state, kp_driving)
