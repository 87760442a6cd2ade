"""EAT input preparation: mel spectrogram, head-pose logits and pose images, and the 11-frame windows the
audio-to-keypoint transformer reads (numpy/torch only, no file I/O).

Every rule here reproduces the official EAT preprocessing (github yuangan/EAT_code: demo.py `prepare_test_data`,
preprocess/generate_poseimg.py) so the official checkpoints see the inputs they were trained on:

- mel: torchaudio's `MelSpectrogram(n_mels=80, n_fft=2048, win_length=640, hop_length=640)` re-implemented with
  `torch.stft` and an HTK mel filterbank (torchaudio is not installed), then `(log(mel + 1e-5) + 4) / 4`.
  One column per 640 samples at 16 kHz = one column per 25 fps video frame.
- pose: per frame three 66-bin logits (yaw, pitch, roll; degrees = expectation * 3 - 99) and a translation t (3,).
  The networks only ever read the softmax expectation of the logits, so synthetic poses are written as discrete
  Gaussian peaks of width POSE_PEAK_WIDTH_BINS whose expectation equals the wanted angle exactly.
- pose images: a 3-D box projected with the rotation built from the *bin expectation* (not degrees: the official
  code forgets `* 3 - 99` there; the network was trained on that), drawn with OpenCV on a 256x256 float image and
  reduced to 64x64 by EAT's anti-alias Gaussian (sigma 1.5, 13x13, stride 4).
- windows: frame r sees frames r-5..r+5; outside [0, n_valid) the mel and DeepSpeech pads from pad.npy are used and
  the pose repeats the first / last pose image. Windows are built for any slice of frames, so a long clip is
  assembled batch by batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

SAMPLE_RATE = 16000  # Hz: EAT's mel and DeepSpeech both run at 16 kHz
HOP_SAMPLES = 640  # 16000 / 25 fps: one mel column per video frame
N_FFT = 2048
N_MELS = 80
LOG_MEL_MEAN, LOG_MEL_STD = -4.0, 4.0  # demo.py's fixed normalisation

NUM_W = 5  # context frames each side (audio2kp_params.num_w)
WINDOW = 2 * NUM_W + 1
N_BINS = 66  # head-pose bins, 3 degrees each, bin 0 = -99 degrees
DEG_PER_BIN, DEG_OFFSET = 3.0, 99.0
POSE_PEAK_WIDTH_BINS = 1.0  # std of the synthetic logit peak, in bins (3 degrees): as sharp as a confident estimate
OFFICIAL_PI = 3.14  # the official degree->radian conversion uses 3.14, not pi

POSE_IMAGE_SIZE = 256  # the box is drawn at 256x256 ...
POSE_DOWN_STRIDE = 4  # ... and reduced to 64x64
POSE_FOCAL_PX = 233.333
BOX_REAR_HALF, BOX_REAR_DEPTH = 75.0, 0.0
BOX_FRONT_HALF, BOX_FRONT_DEPTH = 100.0, 100.0


# ---------------------------------------------------------------- mel
def _hz_to_mel_htk(freq_hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + freq_hz / 700.0)


def _mel_to_hz_htk(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int = N_FFT // 2 + 1, n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Triangular HTK mel filters, no area normalisation, 0 Hz .. Nyquist: float32 (n_freqs, n_mels)."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    mel_edges = np.linspace(_hz_to_mel_htk(np.float64(0.0)), _hz_to_mel_htk(np.float64(sample_rate / 2)), n_mels + 2)
    f_pts = torch.from_numpy(_mel_to_hz_htk(mel_edges)).float()
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


_FILTERBANK: torch.Tensor | None = None


def mel_spectrogram(wave_16k: np.ndarray) -> np.ndarray:
    """float32 mono 16 kHz (L,) -> normalised log-mel float32 (80, L // 640 + 1), as EAT's demo computes it."""
    global _FILTERBANK
    if _FILTERBANK is None:
        _FILTERBANK = mel_filterbank()
    x = torch.as_tensor(np.asarray(wave_16k, dtype=np.float32))
    n_cols = x.shape[0] // HOP_SAMPLES + 1
    if x.shape[0] <= N_FFT // 2:  # reflect padding needs more samples than the pad; zeros keep the column count
        x = F.pad(x, (0, N_FFT // 2 + 1 - x.shape[0]))
    window = torch.hann_window(HOP_SAMPLES)  # periodic, zero-padded to n_fft by stft (centred)
    spec = torch.stft(x, N_FFT, hop_length=HOP_SAMPLES, win_length=HOP_SAMPLES, window=window, center=True,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    power = spec.abs() ** 2  # (1025, cols)
    mel = torch.matmul(power.T, _FILTERBANK).T[:, :n_cols]
    return ((torch.log(mel + 1e-5) - LOG_MEL_MEAN) / LOG_MEL_STD).numpy().astype(np.float32)


# ---------------------------------------------------------------- head pose
@dataclass
class PoseLogits:
    """Driving head pose for N frames, in the he_estimator's format."""

    yaw: np.ndarray  # float32 (N, 66) logits
    pitch: np.ndarray  # float32 (N, 66)
    roll: np.ndarray  # float32 (N, 66)
    t: np.ndarray  # float32 (N, 3)

    def __len__(self) -> int:
        return len(self.t)

    def take(self, frames: np.ndarray | slice) -> "PoseLogits":
        return PoseLogits(self.yaw[frames], self.pitch[frames], self.roll[frames], self.t[frames])


def bin_expectation(logits: np.ndarray) -> np.ndarray:
    """(..., 66) logits -> (...) softmax expectation in bin units, float32 (numpy: these arrays are tiny and
    torch's thread pool start-up costs more than the math)."""
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e * np.arange(N_BINS, dtype=np.float32)).sum(-1) / e.sum(-1)


def logits_to_degrees(logits: np.ndarray) -> np.ndarray:
    return bin_expectation(logits) * DEG_PER_BIN - DEG_OFFSET


def degrees_to_logits(angle_deg: np.ndarray, width_bins: float = POSE_PEAK_WIDTH_BINS) -> np.ndarray:
    """Angles (any shape, degrees) -> float32 (..., 66) Gaussian-peak logits whose softmax expectation * 3 - 99
    is the angle (to ~1e-4 deg; angles are clipped to the representable range [-96, 93] deg)."""
    target = np.clip((np.asarray(angle_deg, dtype=np.float64) + DEG_OFFSET) / DEG_PER_BIN, 1.0, N_BINS - 2.0)
    bins = np.arange(N_BINS, dtype=np.float64)
    centre = target.copy()
    for _ in range(6):  # near the ends the cut-off tail shifts the mean: move the peak until the mean is right
        logits = -0.5 * ((bins - centre[..., None]) / width_bins) ** 2
        p = np.exp(logits - logits.max(-1, keepdims=True))
        mean = (p * bins).sum(-1) / p.sum(-1)
        centre = centre + (target - mean)
    return (-0.5 * ((bins - centre[..., None]) / width_bins) ** 2).astype(np.float32)


def pose_logits_from_degrees(angles_deg: np.ndarray, translation: np.ndarray) -> PoseLogits:
    """(N,3) yaw, pitch, roll degrees + (N,3) t -> PoseLogits."""
    a = np.asarray(angles_deg, dtype=np.float32)
    return PoseLogits(degrees_to_logits(a[:, 0]), degrees_to_logits(a[:, 1]), degrees_to_logits(a[:, 2]),
                      np.asarray(translation, dtype=np.float32).reshape(-1, 3))


def static_pose(he_source: dict[str, np.ndarray], n_frames: int) -> PoseLogits:
    """The source photo's own pose (he_estimator output, (1,66) / (1,3)) held for n_frames."""
    rep = {k: np.repeat(np.asarray(he_source[k], dtype=np.float32).reshape(1, -1), n_frames, axis=0)
           for k in ("yaw", "pitch", "roll", "t")}
    return PoseLogits(rep["yaw"], rep["pitch"], rep["roll"], rep["t"])


def rotation_matrices(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Angles (N,) in the official 'degrees' -> float32 (N,3,3) R = Rx(pitch) @ Ry(yaw) @ Rz(roll)."""
    y, p, r = (np.asarray(v, dtype=np.float32) / np.float32(180) * np.float32(OFFICIAL_PI) for v in (yaw, pitch, roll))
    one, zero = np.ones_like(y), np.zeros_like(y)
    rx = np.stack([one, zero, zero, zero, np.cos(p), -np.sin(p), zero, np.sin(p), np.cos(p)], -1).reshape(-1, 3, 3)
    ry = np.stack([np.cos(y), zero, np.sin(y), zero, one, zero, -np.sin(y), zero, np.cos(y)], -1).reshape(-1, 3, 3)
    rz = np.stack([np.cos(r), -np.sin(r), zero, np.sin(r), np.cos(r), zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return rx @ ry @ rz


def _box_points() -> np.ndarray:
    def square(half: float, depth: float) -> list[tuple[float, float, float]]:
        corners = [(-half, -half), (-half, half), (half, half), (half, -half), (-half, -half)]  # closed loop
        return [(x, y, depth) for x, y in corners]

    return np.array(square(BOX_REAR_HALF, BOX_REAR_DEPTH) + square(BOX_FRONT_HALF, BOX_FRONT_DEPTH), dtype=np.float64)


def draw_pose_box(rotation: np.ndarray, t: np.ndarray) -> np.ndarray:
    """One 256x256 float64 image with the projected pose box (value 255 on 0), drawn exactly as EAT's preprocessing.

    OpenCV accepts the 3x3 rotation matrix as `rvec`; on a float image LINE_AA falls back to 8-connected lines,
    which is what the network was trained on."""
    import cv2

    c = POSE_IMAGE_SIZE / 2
    camera = np.array([[POSE_FOCAL_PX, 0, c], [0, POSE_FOCAL_PX, c], [0, 0, 1]], dtype=np.float64)
    pts, _ = cv2.projectPoints(_box_points(), np.asarray(rotation, np.float64), np.asarray(t, np.float64).reshape(3),
                               camera, np.zeros((4, 1)))
    pts = np.int32(pts.reshape(-1, 2))
    img = np.zeros((POSE_IMAGE_SIZE, POSE_IMAGE_SIZE))
    color = (255, 255, 255)
    cv2.polylines(img, [pts], True, color, 2, cv2.LINE_AA)
    for a, b in ((1, 6), (2, 7), (3, 8)):
        cv2.line(img, tuple(int(v) for v in pts[a]), tuple(int(v) for v in pts[b]), color, 2, cv2.LINE_AA)
    return img


def _antialias_kernel(stride: int = POSE_DOWN_STRIDE) -> torch.Tensor:
    sigma = (stride - 1) / 2  # EAT's AntiAliasInterpolation2d(scale=1/stride)
    size = 2 * round(sigma * 4) + 1
    grid = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-grid**2 / (2 * sigma**2))
    kernel = g[:, None] * g[None, :]
    return (kernel / kernel.sum()).view(1, 1, size, size)


def antialias_downsample(images: torch.Tensor, stride: int = POSE_DOWN_STRIDE) -> torch.Tensor:
    """(N,1,H,W) float32 -> (N,1,H/stride,W/stride): Gaussian blur (zero padded) sampled every stride-th pixel."""
    kernel = _antialias_kernel(stride)
    half = kernel.shape[-1] // 2
    return F.conv2d(F.pad(images, (half, half, half, half)), kernel, stride=stride)  # = full conv, every stride-th


def _sampling_matrix(size: int, stride: int = POSE_DOWN_STRIDE) -> torch.Tensor:
    """(size/stride, size) rows of the normalised 1-D Gaussian centred on every stride-th pixel (zero padding)."""
    k1 = _antialias_kernel(stride)[0, 0].sum(0)  # the 2-D kernel is the outer product of this 1-D one
    half = len(k1) // 2
    a = torch.zeros(size // stride, size + 2 * half)
    for i in range(size // stride):
        a[i, i * stride:i * stride + len(k1)] = k1
    return a[:, half:half + size]


_SAMPLING: dict[int, np.ndarray] = {}


def antialias_downsample_separable(images: np.ndarray, stride: int = POSE_DOWN_STRIDE) -> np.ndarray:
    """Same result as antialias_downsample (to float rounding) as two matrix products: (N,1,H,W) -> (N,1,H/s,W/s)."""
    size = images.shape[-1]
    if size not in _SAMPLING:
        _SAMPLING[size] = _sampling_matrix(size, stride).numpy()
    a = _SAMPLING[size]
    return a @ np.asarray(images, np.float32) @ a.T


def pose_images(pose: PoseLogits) -> np.ndarray:
    """PoseLogits (N) -> float32 (N,1,64,64) pose images (range ~0..255)."""
    rot = rotation_matrices(bin_expectation(pose.yaw), bin_expectation(pose.pitch), bin_expectation(pose.roll))
    drawn = np.stack([draw_pose_box(r.astype(np.float64), t.astype(np.float64)) for r, t in zip(rot, pose.t)])
    return antialias_downsample_separable(drawn[:, None].astype(np.float32))


# ---------------------------------------------------------------- windows
def window_indices(frames: np.ndarray | range, n_valid: int, num_w: int = NUM_W) -> np.ndarray:
    """Frame indices (n,) -> (n, 2*num_w+1) source indices r-num_w..r+num_w; -1 marks 'outside [0, n_valid)'."""
    r = np.asarray(frames, dtype=np.int64)[:, None] + np.arange(-num_w, num_w + 1)[None, :]
    return np.where((r >= 0) & (r < n_valid), r, -1)


def mel_windows(mel: np.ndarray, pad_mel: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """mel (80, M), pad (80,), idx (n, 11) -> float32 (1, n, 1, 80, 11)."""
    # gather then fill: no copy of the whole clip per batch (long clips are windowed in many batches)
    win = np.asarray(mel, np.float32)[:, np.maximum(idx, 0)]  # (80, n, 11)
    win = np.where(idx[None] < 0, np.asarray(pad_mel, np.float32).reshape(-1, 1, 1), win)
    return np.ascontiguousarray(win.transpose(1, 0, 2))[None, :, None]


def deep_windows(deep: np.ndarray, pad_deep: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """DeepSpeech windows (D,16,29), pad (16,29), idx (n, 11) -> float32 (1, n, 11, 16, 29)."""
    rows = np.asarray(deep, np.float32)[np.maximum(idx, 0)]  # (n, 11, 16, 29)
    return np.where(idx[:, :, None, None] < 0, np.asarray(pad_deep, np.float32), rows)[None]


def pose_window_indices(frames: np.ndarray | range, n_valid: int, n_pose: int, num_w: int = NUM_W) -> np.ndarray:
    """(n, 11) pose-image indices: before the clip the first pose, from n_valid on the last (official rule)."""
    r = np.asarray(frames, dtype=np.int64)[:, None] + np.arange(-num_w, num_w + 1)[None, :]
    return np.where(r < 0, 0, np.where(r >= n_valid, n_pose - 1, r))


def pose_windows(images_for: Callable[[np.ndarray], np.ndarray], pidx: np.ndarray) -> np.ndarray:
    """Pose windows (n, 11, 1, 64, 64) from a function that renders the pose images of given frame indices;
    each distinct index is drawn once."""
    unique, inverse = np.unique(pidx, return_inverse=True)
    return images_for(unique)[inverse.reshape(pidx.shape)]


@dataclass
class FeatureStreams:
    """Whole-clip inputs of the audio-to-keypoint transformer; windows are cut from it per batch of frames."""

    mel: np.ndarray  # float32 (80, M) normalised log-mel
    deep: np.ndarray  # float32 (D, 16, 29) DeepSpeech windows
    pose: PoseLogits  # N frames
    pad_mel: np.ndarray  # float32 (80,)
    pad_deep: np.ndarray  # float32 (16, 29)
    _pose_cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def n_frames(self) -> int:
        return len(self.pose)

    @property
    def n_valid(self) -> int:
        """Frames backed by all three streams; later window positions use the pads (demo's name_len)."""
        return min(self.mel.shape[1], len(self.deep), len(self.pose))

    def windows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Inputs for frames [start, stop): mel (1,n,1,80,11), deep (1,n,11,16,29), pose (n,11,1,64,64)."""
        frames = range(start, stop)
        idx = window_indices(frames, self.n_valid)
        pidx = pose_window_indices(frames, self.n_valid, len(self.pose))
        return {"mel": mel_windows(self.mel, self.pad_mel, idx),
                "deep": deep_windows(self.deep, self.pad_deep, idx),
                "pose": pose_windows(self._pose_images, pidx)}

    def _pose_images(self, frames: np.ndarray) -> np.ndarray:
        """Pose images of the given frames; neighbouring windows overlap, so recent images are kept (a few)."""
        todo = np.array([i for i in frames if int(i) not in self._pose_cache], dtype=np.int64)
        if len(todo):
            self._pose_cache.update(zip(todo.tolist(), pose_images(self.pose.take(todo))))
        out = np.stack([self._pose_cache[int(i)] for i in frames])
        for old in [k for k in self._pose_cache if k < int(frames.min())]:  # windows move forward: drop the past
            del self._pose_cache[old]
        return out
