"""Faces in and out of a photo for the enhancer: 5-point detection, alignment to GFPGAN's 512 px template and a
feathered paste back. No torch: the network is the backend's (gfpgan.py)."""
from __future__ import annotations

import cv2
import numpy as np

from avatar.core.errors import BackendUnavailable

FACE_SIZE = 512  # GFPGAN v1.4 works on 512x512 aligned crops


# 5 points (eye centres, nose tip, mouth corners; image left first) of the aligned 512 crop, as the official FFHQ
# alignment used for training
TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                         [201.26117, 371.41043], [313.08905, 371.15118]], np.float32)


BORDER_RGB = (135, 133, 132)  # fill outside the photo: the grey GFPGAN saw around training crops


FEATHER_MARGIN_PX, FEATHER_RAMP_PX = 8, 48  # paste-back mask in crop pixels: hard zero border, then a linear ramp


class FivePointDetector:
    """5 face points per face (eye centres, nose tip, mouth corners) from mediapipe's packaged face mesh.

    `video=True` lets mediapipe track faces between consecutive frames (faster); photos use fresh detection."""

    EYE_L, EYE_R, NOSE, MOUTH_L, MOUTH_R = (33, 133), (362, 263), 1, 61, 291  # mesh indices, image left first

    def __init__(self, max_faces: int = 8, video: bool = False, min_confidence: float = 0.5):
        try:
            import mediapipe as mp
        except ImportError as e:
            raise BackendUnavailable("face detection for enhancement needs mediapipe (pip install mediapipe)") from e
        self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=not video, max_num_faces=max_faces,
                                                     refine_landmarks=False, min_detection_confidence=min_confidence)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 RGB -> (K,5,2) float32 pixel points, largest face first (K may be 0)."""
        h, w = image.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(image))
        faces = []
        for lm in result.multi_face_landmarks or []:
            p = np.array([[q.x * w, q.y * h] for q in lm.landmark], np.float32)
            faces.append(np.stack([p[list(self.EYE_L)].mean(0), p[list(self.EYE_R)].mean(0), p[self.NOSE],
                                   p[self.MOUTH_L], p[self.MOUTH_R]]))
        faces.sort(key=lambda f: -np.linalg.norm(f[0] - f[1]))
        return np.stack(faces) if faces else np.zeros((0, 5, 2), np.float32)

    def close(self) -> None:
        self._mesh.close()


def align_faces(image: np.ndarray, points5: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Photo + (K,5,2) points -> crops uint8 (K,512,512,3) and the (K,2,3) photo->crop affines."""
    crops, affines = [], []
    for pts in points5:
        m, _ = cv2.estimateAffinePartial2D(pts.astype(np.float32), TEMPLATE_512, method=cv2.LMEDS)
        if m is None:  # degenerate points (e.g. all equal): nothing sensible to align
            continue
        crops.append(cv2.warpAffine(image, m, (FACE_SIZE, FACE_SIZE), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_RGB))
        affines.append(m)
    if not crops:
        return np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8), np.zeros((0, 2, 3))
    return np.stack(crops), np.stack(affines)


def _feather_mask(size: int = FACE_SIZE) -> np.ndarray:
    """float32 (size,size): 0 at the crop border, rising linearly to 1 inside (soft seam after paste-back)."""
    r = np.arange(size, dtype=np.float32)
    edge = np.minimum(r, size - 1 - r)
    ramp = np.clip((edge - FEATHER_MARGIN_PX) / FEATHER_RAMP_PX, 0.0, 1.0)
    return np.minimum(ramp[:, None], ramp[None, :])


FEATHER_MASK = _feather_mask()


def paste_faces(image: np.ndarray, faces: np.ndarray, affines: np.ndarray) -> np.ndarray:
    """Warps each enhanced 512 crop back with the inverse affine and blends it in with the feathered mask.
    Only the face's bounding box is touched: pixels outside it are returned unchanged."""
    out = image.copy()
    h, w = image.shape[:2]
    corners = np.array([[0, 0, 1], [FACE_SIZE, 0, 1], [0, FACE_SIZE, 1], [FACE_SIZE, FACE_SIZE, 1]], np.float64)
    for face, m in zip(faces, affines):
        inv = cv2.invertAffineTransform(m)
        xy = corners @ inv.T
        x0, y0 = np.maximum(np.floor(xy.min(0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(xy.max(0)).astype(int) + 1, (w, h))
        if x1 <= x0 or y1 <= y0:
            continue
        local = inv.copy()
        local[:, 2] -= (x0, y0)
        size = (int(x1 - x0), int(y1 - y0))
        warped = cv2.warpAffine(face, local, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mask = cv2.warpAffine(FEATHER_MASK, local, size, flags=cv2.INTER_LINEAR, borderValue=0.0)[..., None]
        region = out[y0:y1, x0:x1].astype(np.float32)
        out[y0:y1, x0:x1] = np.clip(region + (warped.astype(np.float32) - region) * mask + 0.5, 0, 255).astype(np.uint8)
    return out
