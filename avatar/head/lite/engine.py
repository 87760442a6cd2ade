"""The lite engine: per photo a rig (mesh + the look of the mouth's inside), per clip a plan (mouth, blinks, gaze,
emotion, pose), per frame the vertices, the warp (with the eyes moved inside it) and the painted mouth."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from avatar.core.config import AvatarConfig, LimitsConfig
from avatar.core.types import Audio, PoseSequence, check_emotion, check_rgb
from avatar.core.validate import BadValue, finite_number

from ..base import PreparedFace, n_frames
from ..face import prepare_face
from ..poses import ping_pong_indices
from .cavity import MouthLook, draw_mouth, mouth_look
from .expression import MOUTH_STYLE, emotion_offsets
from .eyes import blink_track, gaze_track, move_eyes, soften_lids
from .mesh import Mesh, build_mesh, warp_map
from .motion import posed_vertices, speech_nods
from .mouth import MouthTrack, mouth_track
from .topology import face_frame


@dataclass(frozen=True)
class Rig:
    """What a prepared photo needs for any clip: the mesh (with the photo's expression taken out) and the colours
    of its mouth's inside."""
    mesh: Mesh
    mouth: MouthLook


@dataclass(frozen=True)
class ClipPlan:
    """Everything per clip that is not per pixel: small arrays of n entries (constant memory for long audio)."""
    mouth: MouthTrack
    blinks: np.ndarray  # (n,) lid closure 0..1
    gaze: np.ndarray  # (n,2) -1..1
    emotion_px: np.ndarray  # (V,2)
    open_scale: float
    open_bias: float
    width_bias: float
    pose: np.ndarray  # (n,6): the pose sequence with the speech's nods added to its pitch


def _mouth_box(target: np.ndarray, iod_px: float, size: int) -> tuple[int, int, int, int] | None:
    """The lips' box with a margin (where the warp map is evaluated per pixel), clipped to the frame."""
    lips = target[48:68]
    margin = 0.08 * iod_px
    x0, y0 = np.maximum(np.floor(lips.min(0) - margin).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(lips.max(0) + margin).astype(int), size)
    return (int(x0), int(y0), int(x1), int(y1)) if x1 - x0 > 1 and y1 - y0 > 1 else None


class LiteEngine:
    """TalkingHead "lite": `LiteEngine.load(cfg)`, `prepare(photo)`, then `frames(...)` or `frames_with_alpha(...)`."""

    name = "lite"
    device = "cpu"

    def __init__(self, size: int = 256, batch_size: int = 16, seed: int = 0, limits: LimitsConfig | None = None,
                 template68: np.ndarray | None = None) -> None:
        if size not in (256, 512):
            raise ValueError(f"lite engine size must be 256 or 512, got {size}")
        self.size, self.batch_size, self.seed = size, max(1, batch_size), seed
        self.limits = limits or LimitsConfig()
        self.template68 = template68
        self.fallback_reason: str | None = None  # set by avatar.head.load_head when EAT was wanted

    @classmethod
    def load(cls, cfg: AvatarConfig) -> "LiteEngine":
        return cls(size=cfg.head.size, batch_size=cfg.head.batch_size, seed=cfg.head.seed, limits=cfg.limits)

    def prepare(self, photo: np.ndarray) -> PreparedFace:
        face = prepare_face(photo, self.size, self.limits, self.template68)
        self.rig(face)
        return face

    def rig(self, face: PreparedFace) -> Rig:
        """The face's rig, built once and kept in face.cache."""
        if "lite_rig" not in face.cache:
            face.cache["lite_rig"] = Rig(build_mesh(face), mouth_look(face.crop, face.landmarks))
        return face.cache["lite_rig"]

    def mesh(self, face: PreparedFace, alpha: np.ndarray | None = None) -> Mesh:
        """The face's mesh; with a matte of face.crop (float (S,S) 0..1) in its A channel."""
        mesh = self.rig(face).mesh
        if alpha is None:
            return mesh
        assert alpha.shape == mesh.rgb.shape[:2], "the matte must have the crop's size"
        return Mesh(**{**mesh.__dict__, "alpha": np.ascontiguousarray(alpha, dtype=np.float32)})

    def plan(self, face: PreparedFace, speech: Audio, emotion: str, pose: PoseSequence, intensity: float) -> ClipPlan:
        emotion = check_emotion(emotion)
        k = finite_number(intensity, "intensity", 0.0, 1.0)  # no NaN may reach the warp (native code: a crash)
        if not np.isfinite(pose.angles_deg).all() or not np.isfinite(pose.translation).all():
            raise BadValue("the head pose has NaN or infinite values")
        n = n_frames(speech.duration_s)
        rows = np.concatenate([pose.angles_deg, pose.translation], axis=1)[ping_pong_indices(len(pose), n)]
        rows = rows.astype(np.float32)
        mouth = mouth_track(speech, n)
        rows[:, 1] += speech_nods(mouth.opening, float(np.ptp(pose.angles_deg[:, 1])) if len(pose) else 0.0)
        scale, bias, width = MOUTH_STYLE[emotion]
        return ClipPlan(mouth, blink_track(n, self.seed, pose.start_frame),
                        gaze_track(n, self.seed, pose.start_frame), emotion_offsets(self.mesh(face), emotion, k),
                        1 + (scale - 1) * k, bias * k, width * k, rows)

    def vertices(self, mesh: Mesh, plan: ClipPlan, i: int) -> np.ndarray:
        """The mesh vertices of frame i: the neutralised photo + emotion + the mouth's shape, then the head's pose."""
        press = float(plan.mouth.press[i])
        opening = plan.open_bias + plan.open_scale * float(plan.mouth.opening[i]) * (1 - 0.5 * plan.open_bias)
        width = float(np.clip(plan.width_bias + plan.mouth.width[i], -1, 1))
        bases = mesh.mouth_bases
        pts = (mesh.rest + plan.emotion_px + (opening * (1 - press)) * bases["open"] + press * bases["press"]
               + max(width, 0.0) * bases["spread"] + max(-width, 0.0) * bases["round"])
        return posed_vertices(mesh, pts, plan.pose[i])

    def render_frame(self, rig: Rig, target: np.ndarray, out_rgb: np.ndarray, out_alpha: np.ndarray | None = None,
                     blink: float = 0.0, gaze: np.ndarray | None = None) -> None:
        """One frame into out_rgb (S,S,3) uint8 (and the warped matte into out_alpha (S,S) float32)."""
        mesh = rig.mesh
        pixel_map = warp_map(mesh, target, _mouth_box(target, mesh.iod_px, mesh.rgb.shape[0]))
        eyes = move_eyes(pixel_map, target, mesh.iod_px, blink, np.zeros(2) if gaze is None else gaze)
        cv2.remap(mesh.rgb, pixel_map, None, cv2.INTER_LINEAR, dst=out_rgb, borderMode=cv2.BORDER_REFLECT_101)
        if out_alpha is not None and mesh.alpha is not None:
            cv2.remap(mesh.alpha, pixel_map, None, cv2.INTER_LINEAR, dst=out_alpha, borderMode=cv2.BORDER_REPLICATE)
        soften_lids(out_rgb, eyes, blink, mesh.iod_px)
        _, v, iod = face_frame(target[:68])
        draw_mouth(out_rgb, rig.mouth, target, v, iod)

    def _batches(self, face: PreparedFace, speech: Audio, emotion: str, pose: PoseSequence, intensity: float,
                 alpha: np.ndarray | None, rig: Rig | None = None) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        check_rgb(face.crop)
        rig = rig or Rig(self.mesh(face, alpha), self.rig(face).mouth)
        plan = self.plan(face, speech, emotion, pose, intensity)
        n, size = len(plan.blinks), face.crop.shape[0]
        for start in range(0, n, self.batch_size):
            count = min(self.batch_size, n - start)
            rgb = np.empty((count, size, size, 3), np.uint8)
            mattes = None if alpha is None else np.empty((count, size, size), np.float32)
            for j in range(count):
                i = start + j
                self.render_frame(rig, self.vertices(rig.mesh, plan, i), rgb[j],
                                  None if mattes is None else mattes[j], float(plan.blinks[i]), plan.gaze[i])
            yield rgb, mattes

    def frames(self, face: PreparedFace, speech: Audio, emotion: str, pose: PoseSequence,
               intensity: float = 1.0) -> Iterator[np.ndarray]:
        """Yields uint8 (B,S,S,3) RGB batches; n_frames(speech.duration_s) frames in all."""
        for rgb, _ in self._batches(face, speech, emotion, pose, intensity, None):
            yield rgb

    def frames_with_alpha(self, face: PreparedFace, speech: Audio, emotion: str, pose: PoseSequence,
                          source_alpha: np.ndarray, intensity: float = 1.0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Like frames(), plus the matte of each frame: source_alpha (float (S,S) 0..1, a matte of face.crop) warped
        with the very same map as the pixels, so it is exact and temporally stable at no extra cost."""
        yield from self._batches(face, speech, emotion, pose, intensity, source_alpha)

    def frames_on_background(self, face: PreparedFace, speech: Audio, emotion: str, pose: PoseSequence,
                             source_alpha: np.ndarray, colour: tuple[int, int, int], intensity: float = 1.0,
                             foreground: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """frames() on a solid colour, at the cost of frames(): the photo is composited on the colour once (with its
        matte) and that is what gets warped. Bilinear warping is linear, so this equals compositing each warped
        frame with the warped matte (the painted mouth and lids lie inside the face, where the matte is 1).
        foreground: the crop's colours with its soft edge cleaned of the old backdrop (matting's clean_edge), used
        where the matte is not 1."""
        alpha = np.clip(source_alpha, 0, 1).astype(np.float32)[..., None]
        rig = self.rig(face)
        photo = rig.mesh.rgb if foreground is None else np.where(alpha < 0.99, foreground, rig.mesh.rgb)
        on_colour = photo * alpha + np.float32(colour) * (1 - alpha)
        composited = Mesh(**{**rig.mesh.__dict__, "rgb": np.clip(on_colour + 0.5, 0, 255).astype(np.uint8)})
        yield from (rgb for rgb, _ in self._batches(face, speech, emotion, pose, intensity, None,
                                                    Rig(composited, rig.mouth)))
