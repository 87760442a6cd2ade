"""Face preparation: detect, 68 landmarks (dlib, EAT's own recipe), and the aligned square crop (EAT's framing rule).

Detection policy (dlib HOG frontal detector): the image is searched at most `DETECT_SIDE` px on its long side, first
without upsampling (upsample 0: no false second face on skimage's astronaut), then, only when nothing was found, with
upsample 1, which finds faces down to ~40 px (at the detection scale) but also produces weak false positives; so a
second face counts only when its detector score reaches `SECOND_FACE_MIN_SCORE`.

MediaPipe is not used here: on frontal portraits dlib's HOG detector plus upsample 1 finds every face this stage
accepts (min_face_px = 64 is far above the ~40 px HOG floor), and its 68 points are what EAT's crop rule needs.

The 68-point model comes from the face-recognition-models package: we open its .dat file by path, found through
importlib.util.find_spec, without importing the package (it imports pkg_resources).
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from avatar.core.config import LimitsConfig
from avatar.core.errors import BadImage, FaceTooSmall, NoFaceFound
from avatar.core.media import load_image
from avatar.core.types import check_rgb
from avatar.core.validate import check_photo

from .base import PreparedFace

DETECT_SIDE = 1024  # px: detection runs on a copy no larger than this (HOG cost grows with area)
SECOND_FACE_MIN_SCORE = 0.5  # HOG score a non-best detection needs to count as a real face
VOX_SIDE_FACTOR = 2.1  # EAT's vox-style crop: square side = landmark x-extent * 2.1
TEMPLATE_ROWS = 47  # EAT aligns on template rows 0..46 (jaw, brows, nose, eyes)
TEMPLATE_SIZE = 256  # EAT's template is in 256x256 crop coordinates


@dataclass(frozen=True)
class FaceBox:
    left: float
    top: float
    right: float
    bottom: float
    score: float = 0.0  # detector confidence (dlib HOG score; higher = surer)

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def side(self) -> float:
        return min(self.width, self.height)

    @property
    def area(self) -> float:
        return self.width * self.height

    def scaled(self, factor: float) -> "FaceBox":
        return FaceBox(self.left * factor, self.top * factor, self.right * factor, self.bottom * factor, self.score)


def _model_path(name: str) -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package face-recognition-models is not installed (it holds dlib's landmark model)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise RuntimeError(f"dlib model file missing: {path}")
    return path


@functools.lru_cache(maxsize=1)
def _detector():
    import dlib

    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=1)
def _predictor():
    import dlib

    return dlib.shape_predictor(str(_model_path("shape_predictor_68_face_landmarks.dat")))


def detect_faces(image: np.ndarray, min_face_px: int = 64) -> list[FaceBox]:
    """uint8 RGB image -> face boxes in image pixels, best score first (see the module doc for the policy).

    First a fast pass on a copy of at most DETECT_SIDE px; if it finds nothing, a pass upsampled once, on a copy
    large enough that a min_face_px face spans about 36 px there (dlib finds boxes down to about 70 px, so 35 px
    upsampled once): on a 4000 px photo a 72 px face was otherwise missed (this pass: about 1 s there)."""
    check_rgb(image)
    long_side = max(image.shape[:2])
    for side, upsample in ((DETECT_SIDE, 0), (max(DETECT_SIDE, long_side * 36 / max(1, min_face_px)), 1)):
        factor = min(1.0, side / long_side)
        small = image if factor == 1.0 else cv2.resize(image, None, fx=factor, fy=factor,
                                                       interpolation=cv2.INTER_AREA)
        rects, scores, _ = _detector().run(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), upsample, 0.0)
        if len(rects):
            break
    boxes = [FaceBox(r.left(), r.top(), r.right(), r.bottom(), float(s)).scaled(1 / factor)
             for r, s in zip(rects, scores)]
    boxes.sort(key=lambda b: -b.score)
    return boxes[:1] + [b for b in boxes[1:] if b.score >= SECOND_FACE_MIN_SCORE]


def landmarks68(image: np.ndarray, box: FaceBox) -> np.ndarray:
    """The 68 iBUG landmarks (x, y) in image pixels, float32 (68, 2)."""
    import dlib

    check_rgb(image)
    rect = dlib.rectangle(int(round(box.left)), int(round(box.top)), int(round(box.right)), int(round(box.bottom)))
    shape = _predictor()(image, rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def _similarity_to_template(landmarks: np.ndarray, template68: np.ndarray, size: int) -> np.ndarray:
    """3x3 image->crop matrix: the least-squares similarity taking landmark rows 0..46 onto the (scaled) template."""
    from skimage.transform import SimilarityTransform

    dst = np.asarray(template68, np.float64)[:TEMPLATE_ROWS] * (size / TEMPLATE_SIZE)
    src = np.asarray(landmarks, np.float64)[:TEMPLATE_ROWS]
    if hasattr(SimilarityTransform, "from_estimate"):
        tform = SimilarityTransform.from_estimate(src, dst)
    else:  # scikit-image < 0.26
        tform = SimilarityTransform()
        tform.estimate(src, dst)
    return np.asarray(tform.params, np.float64)


def _vox_square(landmarks: np.ndarray, size: int) -> np.ndarray:
    """3x3 image->crop matrix of EAT's vox-style square (centre high on the face, side 2.1x the landmark width)."""
    minx, miny = np.floor(landmarks.min(axis=0))
    maxx, maxy = np.floor(landmarks.max(axis=0))
    xc, yc = (minx + maxx) // 2, (3 * miny + maxy) // 4
    side = max(1.0, (maxx - minx) * VOX_SIDE_FACTOR)
    scale = size / side
    return np.array([[scale, 0, -(xc - side / 2) * scale], [0, scale, -(yc - side / 2) * scale], [0, 0, 1]])


def align_crop(image: np.ndarray, landmarks: np.ndarray, size: int,
               template68: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EAT's framing rule -> (crop uint8 (size,size,3), 3x3 image->crop matrix, landmarks in crop pixels).

    With a template (68x2 in 256 coordinates, rows 0..46 used) the crop is the similarity that best maps the landmarks
    onto it (black outside the photo, as EAT's skimage warp); without one it is the vox-style square, where the parts
    of the square beyond the photo are filled by reflection (the square keeps its aspect ratio).
    """
    check_rgb(image)
    pts = np.asarray(landmarks, np.float32).reshape(68, 2)
    if template68 is not None:
        matrix, border = _similarity_to_template(pts, template68, size), cv2.BORDER_CONSTANT
    else:
        matrix, border = _vox_square(pts, size), cv2.BORDER_REFLECT_101
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    source, warp = image, matrix
    if scale < 0.8:  # warpAffine has no area filter (INTER_AREA falls back to bilinear): shrink first, then warp
        h, w = image.shape[:2]
        small_w, small_h = max(1, round(w * scale)), max(1, round(h * scale))
        source = cv2.resize(image, (small_w, small_h), interpolation=cv2.INTER_AREA)
        sx, sy = small_w / w, small_h / h  # pixel centres: x_big = (x_small + 0.5) / sx - 0.5
        warp = matrix @ np.array([[1 / sx, 0, 0.5 / sx - 0.5], [0, 1 / sy, 0.5 / sy - 0.5], [0, 0, 1]])
    crop = cv2.warpAffine(source, warp[:2].astype(np.float64), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=border)
    crop_pts = pts @ matrix[:2, :2].T.astype(np.float32) + matrix[:2, 2].astype(np.float32)
    return crop, matrix, crop_pts.astype(np.float32)


def load_photo(image: np.ndarray | str | Path, max_side: int, limits: LimitsConfig | None = None) -> np.ndarray:
    """Any photo (array in any mode, or a file) -> uint8 RGB, downscaled so its long side is at most max_side.
    Images over limits.max_image_megapixels are refused before decoding, thinner than limits.min_image_side after."""
    limits = limits or LimitsConfig()
    rgb = check_photo(load_image(image, limits.max_image_megapixels), limits.min_image_side)
    return downscale_to_limit(rgb, max_side)


def downscale_to_limit(image: np.ndarray, max_side: int) -> np.ndarray:
    height, width = image.shape[:2]
    if max(height, width) <= max_side:
        return image
    factor = max_side / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))  # a thin strip keeps >= 1 px
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def prepare_face(image: np.ndarray | str | Path, size: int = 256, limits: LimitsConfig | None = None,
                 template68: np.ndarray | None = None) -> PreparedFace:
    """A photo (array in any mode, or a file) -> PreparedFace: the aligned crop and its landmarks.

    Raises BadImage (not an image), NoFaceFound, FaceTooSmall (box side below limits.min_face_px). With several faces
    the largest is used and a warning is returned. cache holds 'transform' (3x3 photo->crop) and 'photo_landmarks'.
    """
    limits = limits or LimitsConfig()
    rgb = load_photo(image, limits.max_image_side, limits)
    if min(rgb.shape[:2]) < 8:
        raise BadImage(f"the image is too small ({rgb.shape[1]}x{rgb.shape[0]} px)")
    boxes = detect_faces(rgb, limits.min_face_px)
    if not boxes:
        raise NoFaceFound("no face found in the photo: use a clear, front-facing portrait")
    box = max(boxes, key=lambda b: b.area)
    if box.side < limits.min_face_px:
        raise FaceTooSmall(f"the face is too small ({box.side:.0f} px); it must be at least {limits.min_face_px} px "
                           "wide: use a closer or larger photo")
    warnings = (f"{len(boxes)} faces found; using the largest",) if len(boxes) > 1 else ()
    points = landmarks68(rgb, box)
    crop, matrix, crop_pts = align_crop(rgb, points, size, template68)
    return PreparedFace(crop=crop, landmarks=crop_pts, warnings=warnings,
                        cache={"transform": matrix, "photo_landmarks": points, "box": box})
