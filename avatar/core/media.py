"""Media I/O in one place: decode any audio to float32 mono, images to uint8 RGB, and write H.264 + AAC MP4 files
by streaming frames to ffmpeg (the binary shipped by imageio-ffmpeg; no system ffmpeg is assumed)."""
from __future__ import annotations

import re
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .errors import AudioTooLong, AudioTooShort, BadAudio, BadImage, NoSpeech
from .types import FPS, Audio, check_frames

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4000, 384000  # Hz: what a microphone or an audio file can have
SILENCE_DBFS = -55.0  # absolute 20 ms frame RMS below this everywhere = "no speech heard" (a quiet take of clear
# speech peaking near -40 dBFS has frames around -45 dBFS: Whisper reads it; a muted microphone stays below -70)


# ffmpeg reads what users upload only through these demuxers and only from local files: no playlists (hls, concat,
# m3u8 pointing at file:///etc/... or http://), no network protocols, no image sequences
AUDIO_DEMUXERS = ("wav", "w64", "mp3", "flac", "ogg", "matroska", "webm", "mov", "mp4", "m4a", "3gp", "aac", "aiff",
                  "caf", "au", "amr", "avi", "mpegts")
IMAGE_DEMUXERS = ("png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "gif", "apng")


def input_guard(demuxers: tuple[str, ...] = AUDIO_DEMUXERS) -> list[str]:
    """ffmpeg input options (before -i) that confine it to local files of the listed formats."""
    return ["-protocol_whitelist", "file,pipe", "-format_whitelist", ",".join(demuxers)]


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


# ---------------------------------------------------------------- audio
def load_audio(path: str | Path, sample_rate: int = 16000, max_s: float | None = None) -> Audio:
    """Decodes any audio ffmpeg reads (wav, mp3, flac, ogg, webm/opus, m4a; any rate, any channels) to float32 mono.
    max_s: raise AudioTooLong for longer audio, after decoding only that much (a small upload can hold hours of
    low-bitrate speech: decoding it all first would take minutes and gigabytes)."""
    p = Path(path)
    if not p.is_file():
        raise BadAudio(f"audio file not found: {p.name}")
    if p.stat().st_size == 0:
        raise BadAudio("the audio file is empty (0 bytes)")
    limit = [] if max_s is None else ["-t", f"{max_s + 1.0:.3f}"]
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", *input_guard(), "-i", str(p), "-vn", "-ac", "1", "-ar", str(sample_rate),
           *limit, "-f", "f32le", "-"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise BadAudio(f"{p.name} is not an audio file we can decode")
    samples = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
    if samples.size == 0:
        raise BadAudio(f"{p.name} contains no audio samples")
    if max_s is not None and samples.size > max_s * sample_rate:
        raise AudioTooLong(f"the audio is more than {max_s:g} s long; the maximum is {max_s:g} s")
    return Audio(np.clip(samples, -1.0, 1.0), sample_rate)


def audio_from_array(samples: np.ndarray, sample_rate: int) -> Audio:
    """Any PCM array (int16/int32/float, (n,) or (n, channels)) -> float32 mono Audio."""
    x = np.asarray(samples)
    if x.size == 0:
        raise BadAudio("the audio is empty")
    if x.ndim not in (1, 2) or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise BadAudio(f"expected audio samples (one channel, or several as columns), not a {x.ndim}-D {x.dtype} array")
    rate = sample_rate if isinstance(sample_rate, (int, np.integer)) else None
    if rate is None or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise BadAudio(f"the audio's sample rate {sample_rate!r} is not one we can use "
                       f"({MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    x = x.astype(np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1 if x.shape[1] <= 8 else 0)
    if not np.isfinite(x).all():
        raise BadAudio("the audio has invalid samples (NaN or infinity): it is damaged; record or export it again")
    return Audio(np.clip(x, -1.0, 1.0).astype(np.float32), int(sample_rate))


def resample(audio: Audio, sample_rate: int) -> Audio:
    if audio.sample_rate == sample_rate:
        return audio
    from scipy.signal import resample_poly

    ratio = Fraction(sample_rate, audio.sample_rate)
    y = resample_poly(audio.samples, ratio.numerator, ratio.denominator).astype(np.float32)
    return Audio(np.clip(y, -1.0, 1.0), sample_rate, audio.visemes)  # times in s: the same at any rate


def save_wav(audio: Audio, path: str | Path) -> Path:
    import soundfile as sf

    sf.write(str(path), audio.samples, audio.sample_rate, subtype="PCM_16")
    return Path(path)


def check_duration(audio: Audio, min_s: float, max_s: float) -> Audio:
    if audio.duration_s < min_s:
        raise AudioTooShort(f"the audio is {audio.duration_s:.2f} s long; at least {min_s:g} s is needed")
    if audio.duration_s > max_s:
        raise AudioTooLong(f"the audio is {audio.duration_s:.1f} s long; the maximum is {max_s:g} s")
    return audio


def frame_rms_dbfs(audio: Audio, frame_s: float = 0.02) -> np.ndarray:
    n = max(1, int(audio.sample_rate * frame_s))
    usable = len(audio.samples) // n * n
    if usable == 0:
        return np.array([-120.0])
    frames = audio.samples[:usable].reshape(-1, n)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-6))


def check_not_silent(audio: Audio) -> Audio:
    """Raises NoSpeech when no 20 ms frame rises above SILENCE_DBFS (absolute level)."""
    if frame_rms_dbfs(audio).max() < SILENCE_DBFS:
        raise NoSpeech("no speech heard: the recording is silent or far too quiet (check the microphone)")
    return audio


# ---------------------------------------------------------------- images
MAX_IMAGE_MEGAPIXELS = 40.0  # default cap (config: limits.max_image_megapixels)


def load_image(source: str | Path | np.ndarray, max_megapixels: float = MAX_IMAGE_MEGAPIXELS) -> np.ndarray:
    """A path or an array in any common mode (gray, RGBA, CMYK, palette, 16-bit) -> uint8 HxWx3 RGB. Files are turned
    upright by their EXIF orientation (phone photos are stored sideways with a rotation tag); transparent pixels are
    composited on white, files and arrays alike. A file of more than max_megapixels is refused from its header,
    before it is decoded (a 0.5 MB PNG can hold 13000x13000 pixels: 4.8 GB once decoded)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(source, np.ndarray):
        _check_pixels(source.shape[1] if source.ndim > 1 else 0, source.shape[0], max_megapixels)
        return array_to_rgb(source)
    p = Path(source)
    if not p.is_file():
        raise BadImage(f"image file not found: {p.name}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap comes first
            opened = Image.open(p)
        with opened:
            _check_pixels(*opened.size, max_megapixels)
            opened.load()
            im = ImageOps.exif_transpose(opened)
            if im.mode in ("I;16", "I;16B", "I", "F"):
                arr = np.asarray(im, dtype=np.float64)
                arr = (255 * (arr - arr.min()) / max(1e-9, np.ptp(arr))).astype(np.uint8)
                return array_to_rgb(arr)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                return array_to_rgb(np.asarray(im.convert("RGBA"), dtype=np.uint8))
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise BadImage(f"{p.name} is not an image we can read (use PNG or JPEG)") from None


def _check_pixels(width: int, height: int, max_megapixels: float) -> None:
    if width * height > max_megapixels * 1e6:
        raise BadImage(f"the image is {width}x{height} px ({width * height / 1e6:.0f} megapixels); the limit is "
                       f"{max_megapixels:g} megapixels: use a smaller photo")


def array_to_rgb(arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr)
    if a.size == 0 or a.ndim not in (2, 3):
        raise BadImage("expected an image (height x width [x channels])")
    if a.dtype.kind in "ui" and a.dtype.itemsize > 1 and a.max() > 255:  # 16-bit (or wider) samples
        top = 65535.0 if a.max() <= 65535 else float(a.max())  # 16-bit data in any integer type, else its range
        a = np.clip(np.round(a.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise BadImage("the image has NaN or infinite pixel values")
    if a.dtype != np.uint8:
        a = np.clip(a * 255.0 if a.dtype.kind == "f" and a.max() <= 1.0 else a, 0, 255).round().astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        rgb, alpha = a[:, :, :3].astype(np.float32), a[:, :, 3:].astype(np.float32) / 255.0
        a = (rgb * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)  # composite on white
    elif a.shape[2] != 3:
        raise BadImage(f"unsupported image with {a.shape[2]} channels")
    return np.ascontiguousarray(a)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    Image.fromarray(image).save(str(path), format="PNG")
    return Path(path)


# ---------------------------------------------------------------- video
class VideoWriter:
    """Streams uint8 RGB frames into an MP4 (H.264 yuv420p + AAC) through one ffmpeg process: constant memory.

    with VideoWriter(out, fps=25, audio=speech) as w:
        for batch in frames: w.write(batch)
    """

    def __init__(self, path: str | Path, fps: int | str = FPS, audio: Audio | None = None, crf: int = 20,
                 preset: str = "veryfast") -> None:
        self.path, self.fps, self.audio, self.crf, self.preset = Path(path), fps, audio, crf, preset
        self.frames_written = 0
        self._proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._size: tuple[int, int] | None = None

    def _start(self, height: int, width: int) -> None:
        self._size = (height, width)
        cmd = [ffmpeg_exe(), "-nostdin", "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-r", str(self.fps), "-i", "-"]
        if self.audio is not None:
            self._tmp = tempfile.TemporaryDirectory(prefix="avatar-mux-")
            wav = save_wav(self.audio, Path(self._tmp.name) / "audio.wav")
            cmd += ["-i", str(wav), "-c:a", "aac", "-b:a", "128k"]
        if height % 2 or width % 2:  # yuv420p needs even sizes (an uploaded phone video may be 405 px wide)
            cmd += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"]
        cmd += ["-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf), "-pix_fmt", "yuv420p",
                "-movflags", "+faststart", str(self.path)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, frames: np.ndarray) -> None:
        frames = check_frames(frames if frames.ndim == 4 else frames[None])
        if self._proc is None:
            self._start(frames.shape[1], frames.shape[2])
        assert frames.shape[1:3] == self._size, "all frames of a video must have the same size"
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(np.ascontiguousarray(frames).tobytes())
        self.frames_written += len(frames)

    def close(self) -> Path:
        if self._proc is None:
            raise ValueError("no frames were written")
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
        code = self._proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
        if code != 0:
            raise RuntimeError(f"ffmpeg failed ({code}): {err.strip()[-500:]}")
        return self.path

    def abort(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def frame_rate_text(fps: float) -> str:
    """A frame rate for ffmpeg's -r: the exact NTSC fraction for 23.976 / 29.97 / 59.94 (headers print them rounded;
    re-encoding at 30 instead of 30000/1001 drifts 0.1 %: 0.6 s of lip-sync in 10 minutes), else the number."""
    ntsc = round(fps * 1.001)
    if ntsc in (24, 30, 48, 60, 120) and abs(fps - ntsc / 1.001) < 0.01:
        return f"{ntsc * 1000}/1001"
    return f"{fps:g}"


def write_video(path: str | Path, frames: Iterable[np.ndarray], audio: Audio | None = None,
                fps: int | str = FPS) -> Path:
    with VideoWriter(path, fps=fps, audio=audio) as w:
        for batch in frames:
            w.write(batch)
    return Path(path)


def read_video(path: str | Path, batch: int = 16) -> Iterator[np.ndarray]:
    """Yields uint8 (B,H,W,3) RGB batches of a video file's frames."""
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", input_params=input_guard())
    meta = next(gen)
    width, height = meta["size"]
    buf: list[np.ndarray] = []
    for raw in gen:
        buf.append(np.frombuffer(raw, np.uint8).reshape(height, width, 3))
        if len(buf) == batch:
            yield np.stack(buf)
            buf = []
    if buf:
        yield np.stack(buf)


@dataclass(frozen=True)
class MediaInfo:
    video_codec: str | None
    audio_codec: str | None
    fps: float | None
    width: int | None
    height: int | None
    n_frames: int
    video_duration_s: float
    audio_duration_s: float
    duration_s: float = 0.0  # the container's, from the header (0 when it has none)
    tbr: float | None = None  # the rate frames are decoded at (read_video's); differs from fps for variable rates
    container: str = ""  # ffmpeg's demuxer name: mov,mp4,..., matroska,webm, png_pipe, image2, ...

    @property
    def is_video(self) -> bool:
        """Moving pictures: a video stream in a container that is not a still-image format."""
        still = self.container in ("image2", "gif", "apng") or self.container.endswith("_pipe")
        return self.video_codec is not None and not still


def probe(path: str | Path, decode: bool = True) -> MediaInfo:
    """Streams, codecs, size and fps from the headers; with decode, also the frame count and per-stream durations
    (decoded, not from headers: a full read of the file; decode=False leaves them 0)."""
    cmd = [ffmpeg_exe(), "-nostdin", *input_guard(AUDIO_DEMUXERS + IMAGE_DEMUXERS), "-i", str(path)]
    err = subprocess.run(cmd, capture_output=True).stderr.decode(errors="replace")
    video = re.search(r"Stream #\S+.*?: Video: (\w+).*?, (\d+)x(\d+)[^\n]*?, ([\d.]+) fps", err)
    audio = re.search(r"Stream #\S+.*?: Audio: (\w+)", err)
    n_frames = 0
    fps = float(video.group(4)) if video else None
    if video and decode:
        n_frames, _ = _count_frames(Path(path))
    audio_s = 0.0
    if audio and decode:
        audio_s = load_audio(path, 16000).duration_s
    length = re.search(r"Duration: (\d+):(\d+):([\d.]+)", err)
    seconds = int(length.group(1)) * 3600 + int(length.group(2)) * 60 + float(length.group(3)) if length else 0.0
    tbr = re.search(r"Stream #\S+.*?: Video: [^\n]*?([\d.]+)(k?) tbr", err)
    container = re.search(r"Input #0, ([^\s]+?),? from", err)
    return MediaInfo(video.group(1) if video else None, audio.group(1) if audio else None, fps,
                     int(video.group(2)) if video else None, int(video.group(3)) if video else None,
                     n_frames, n_frames / fps if fps else 0.0, audio_s,
                     seconds, float(tbr.group(1)) * (1000 if tbr.group(2) else 1) if tbr else None,
                     container.group(1) if container else "")


def concat_mp4(chunks: list[Path], out_path: Path) -> Path:
    """Joins same-format MP4 chunks in order: the video is copied (ffmpeg's concat demuxer, no re-encoding); the
    audio is decoded per chunk, padded or cut to that chunk's video length and encoded once. Copying the AAC
    streams as well would keep every chunk's encoder priming (about 23 ms at 44.1 kHz) and sentence tails longer
    than the picture: the sound would drift further behind the lips with every sentence."""
    chunks = [Path(c).resolve() for c in chunks]
    infos = [probe(c, decode=False) for c in chunks]  # codecs and fps: the frames are counted once below
    with_audio = all(info.audio_codec for info in infos)
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "list.txt"
        listing.write_text("".join("file '{}'\n".format(str(c).replace("'", "'\\''")) for c in chunks))
        cmd = [ffmpeg_exe(), "-nostdin", "-y", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing)]
        if with_audio:
            parts = []
            for i, (c, info) in enumerate(zip(chunks, infos)):
                seconds = _count_frames(c)[0] / (info.fps or FPS)
                cmd += ["-i", str(c)]
                parts.append(f"[{i + 1}:a]apad,atrim=end={seconds:.6f},asetpts=PTS-STARTPTS[a{i}]")
            graph = ";".join(parts) + ";" + "".join(f"[a{i}]" for i in range(len(chunks))) + \
                f"concat=n={len(chunks)}:v=0:a=1[a]"
            cmd += ["-filter_complex", graph, "-map", "0:v", "-map", "[a]", "-c:v", "copy", "-c:a", "aac",
                    "-b:a", "128k"]
        else:
            cmd += ["-c", "copy"]
        proc = subprocess.run(cmd + [str(out_path)], capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg could not join the chunks: {proc.stderr.decode(errors='replace')[-400:]}")
    return Path(out_path)


def _count_frames(path: Path) -> tuple[int, float]:
    import imageio_ffmpeg

    return imageio_ffmpeg.count_frames_and_secs(str(path))
