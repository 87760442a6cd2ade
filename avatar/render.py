"""render_clip: talking-head frames -> (matting on a solid colour) -> (size) -> (enhancer) -> H.264 + AAC MP4, streamed
batch by batch through one ffmpeg process, so a 10-minute clip needs no more memory than a 1-second one."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from avatar.core.media import VideoWriter
from avatar.core.types import FPS, Audio, PoseSequence, ProgressFn, check_emotion
from avatar.head.poses import load_pose

from .head import PreparedFace, TalkingHead, n_frames
from .matting import AlphaSmoother, Matting, clean_edge, with_face_prior

log = logging.getLogger("avatar")

Enhancer = Callable[[np.ndarray], np.ndarray]  # uint8 (B,H,W,3) -> uint8 (B,H',W',3)


def source_matte(face: PreparedFace, matting: Matting) -> np.ndarray:
    """The photo crop's matte (float32 (S,S)), computed once per face and backend, feathered like clip mattes and
    opaque over the landmarks' face hull."""
    key = ("matte", matting.backend)
    if key not in face.cache:
        feathered = AlphaSmoother()(matting.alpha(face.crop[None]))[0]
        face.cache[key] = with_face_prior(feathered, face.landmarks)
    return face.cache[key]


def source_cutout(face: PreparedFace, matting: Matting) -> tuple[np.ndarray, np.ndarray]:
    """(foreground colours, matte) of the photo crop with the edge cleaned of its old backdrop (no pale fringe
    around hair on the new colour), computed once per face and backend."""
    key = ("cutout", matting.backend)
    if key not in face.cache:
        foreground, matte = clean_edge(face.crop, source_matte(face, matting))
        face.cache[key] = (foreground, with_face_prior(matte, face.landmarks))
    return face.cache[key]


def composited_frames(engine: TalkingHead, face: PreparedFace, speech: Audio, emotion: str, pose: PoseSequence,
                      background: tuple[int, int, int] | None, matting: Matting | None,
                      intensity: float = 1.0) -> Iterator[np.ndarray]:
    """The engine's frame batches, on the background colour when one is given and matting is on."""
    if background is None or matting is None or not matting.enabled:
        if background is not None:
            log.info("render: matting is off; keeping the photo's background")
        yield from engine.frames(face, speech, emotion, pose, intensity)
        return
    on_background = getattr(engine, "frames_on_background", None)
    if on_background is not None:  # the engine warps the photo's matte itself (lite): no per-frame matting
        foreground, matte = source_cutout(face, matting)
        yield from on_background(face, speech, emotion, pose, matte, background, intensity, foreground=foreground)
        return
    # per-frame matting, smoothed over time
    yield from matting.clip(engine.frames(face, speech, emotion, pose, intensity), background)


def _resized(frames: np.ndarray, size: int | None) -> np.ndarray:
    if not size or frames.shape[1:3] == (size, size):
        return frames
    interp = cv2.INTER_AREA if size < frames.shape[1] else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in frames])


def render_clip(engine: TalkingHead, face: PreparedFace, speech: Audio, emotion: str, pose: str | PoseSequence,
                background: tuple[int, int, int] | None = None, size: int | None = None,
                matting: Matting | None = None, out_path: str | Path = "out.mp4", enhancer: Enhancer | None = None,
                intensity: float = 1.0, progress: ProgressFn | None = None, start_frame: int = 0) -> Path:
    """Renders one clip to out_path (MP4, 25 fps, the speech as AAC) and returns the path.

    pose: a pose name (assets/poses) or a PoseSequence; background None keeps the photo's background; size: output
    side in px (frames are resized when the engine renders another size); enhancer: frames -> frames, applied last;
    start_frame: frames of the same performance already shown (a reply's earlier sentences): the named pose and the
    blinks continue from there.
    """
    emotion = check_emotion(emotion)
    total = n_frames(speech.duration_s)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(out_path, fps=FPS, audio=speech) as writer:
        for frames in clip_frames(engine, face, speech, emotion, pose, background=background, size=size,
                                  matting=matting, intensity=intensity, start_frame=start_frame):
            if enhancer is not None:
                frames = enhancer(frames)
            writer.write(frames)
            if progress is not None:
                progress(writer.frames_written / total, f"rendered {writer.frames_written}/{total} frames")
    if writer.frames_written != total:
        raise RuntimeError(f"engine {engine.name!r} produced {writer.frames_written} frames, expected {total}")
    return out_path


def clip_frames(engine: TalkingHead, face: PreparedFace, speech: Audio, emotion: str, pose: str | PoseSequence, *,
                background: tuple[int, int, int] | None = None, size: int | None = None,
                matting: Matting | None = None, intensity: float = 1.0, start_frame: int = 0) -> Iterator[np.ndarray]:
    """The clip's uint8 (B,size,size,3) batches before enhancement: head, matting onto the background, resizing (a
    turn's pipeline enhances and encodes them on other workers)."""
    total = n_frames(speech.duration_s)
    if isinstance(pose, str):
        sequence = load_pose(pose, total, start_frame)
    else:  # a given sequence is used as it is; start_frame still moves its clocks (blinks)
        sequence = dataclasses.replace(pose, start_frame=start_frame) if start_frame else pose
    for frames in composited_frames(engine, face, speech, check_emotion(emotion), sequence, background, matting,
                                    intensity):
        yield _resized(frames, size)
