"""Matting on the real portrait: selfie segmentation (packaged), backend choice, compositing, clip smoothing."""
from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from avatar.core.config import AvatarConfig
from avatar.core.errors import AvatarError
from avatar.head.face import FaceBox, detect_faces, landmarks68, prepare_face
from avatar.matting import AlphaSmoother, Matting
from avatar.render import source_matte


@pytest.fixture(scope="module")
def matting(tmp_path_factory) -> Matting:
    weights = tmp_path_factory.mktemp("no-weights")  # an empty weights_dir: no MODNet file
    return Matting.load(AvatarConfig(weights_dir=str(weights)))


def face_region(frame: np.ndarray, inset_px: int = 2) -> tuple[np.ndarray, FaceBox]:
    """The detected face: the convex hull of its 68 landmarks (brows to chin), pulled inset_px inside the jaw line
    (which is the silhouette's edge, where any matte is soft), as a bool mask; and its dlib box. dlib's square box
    reaches past the jaw into the backdrop at its lower corners, so the alpha checks use the hull and the box's
    centre."""
    import cv2

    box = detect_faces(frame)[0]
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(landmarks68(frame, box)).astype(np.int32)), 1)
    side = 2 * inset_px + 1
    return cv2.erode(mask, np.ones((side, side), np.uint8)) > 0, box


def central(alpha: np.ndarray, box: FaceBox, inset: float = 0.15) -> np.ndarray:
    dx, dy = inset * box.width, inset * box.height
    return alpha[int(box.top + dy):int(box.bottom - dy), int(box.left + dx):int(box.right - dx)]


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    return prepare_face(data.astronaut(), 256).crop


def test_auto_without_modnet_weights_is_selfie_and_says_why(matting):
    assert matting.backend == "selfie" and matting.enabled
    assert "MODNet weights not found" in matting.fallback_reason


def test_modnet_requested_without_weights_falls_back(tmp_path):
    cfg = AvatarConfig(weights_dir=str(tmp_path)).replace(**{"matting.backend": "modnet"})
    assert Matting.load(cfg).backend == "selfie"


def test_none_and_unknown_backends(tmp_path, crop):
    off = Matting.load(AvatarConfig().replace(**{"matting.backend": "none"}))
    assert not off.enabled
    alpha = off.alpha(crop[None])
    assert alpha.shape == (1, 256, 256) and np.all(alpha == 1)
    np.testing.assert_array_equal(off.composite(crop[None], alpha, (0, 255, 0)), crop[None])
    with pytest.raises(AvatarError, match="'magic' is not one of"):  # refused when the config is built
        AvatarConfig().replace(**{"matting.backend": "magic"})


def test_face_is_solid_foreground_and_corners_are_background(matting, crop):
    alpha = matting.alpha(crop[None])[0]
    assert alpha.dtype == np.float32 and alpha.min() >= 0 and alpha.max() <= 1
    hull, box = face_region(crop)
    assert alpha[hull].min() > 0.9, f"holes in the face: min alpha {alpha[hull].min():.3f}"
    assert central(alpha, box).min() > 0.9
    corners = np.concatenate([alpha[:24, :24].ravel(), alpha[:24, -24:].ravel()])  # sky-grey backdrop, top corners
    assert corners.max() < 0.1


def test_composite_puts_the_colour_behind(matting, crop):
    alpha = matting.alpha(crop[None])
    out = matting.composite(crop[None], alpha, (0, 255, 0))[0]
    assert out.dtype == np.uint8 and out.shape == crop.shape
    np.testing.assert_array_equal(out[:10, :10], np.broadcast_to([0, 255, 0], (10, 10, 3)))
    centre = (slice(110, 140), slice(110, 140))  # the face
    assert np.abs(out[centre].astype(int) - crop[centre]).max() <= 1


def test_clip_matte_is_temporally_stable(matting, crop):
    """Frames that differ only by sensor noise: the smoothed clip matte flickers less than per-frame mattes."""
    rng = np.random.default_rng(0)
    frames = np.clip(crop[None].astype(np.int16) + rng.normal(0, 6, (8, *crop.shape)), 0, 255).astype(np.uint8)
    raw = matting.alpha(frames)
    smooth = AlphaSmoother()(raw.copy())
    assert np.abs(np.diff(smooth, axis=0)).mean() < 0.7 * np.abs(np.diff(raw, axis=0)).mean()
    batches = list(matting.clip([frames[:4], frames[4:]], (255, 255, 255)))
    assert [b.shape for b in batches] == [(4, 256, 256, 3)] * 2


def test_lite_frames_carry_a_solid_face_matte(matting):
    """The lite engine warps the photo's matte with the frame: the face stays opaque while the head moves."""
    from avatar.head.lite import LiteEngine
    from avatar.head.poses import load_pose
    from avatar.core.types import Audio

    engine = LiteEngine(size=256, batch_size=10)
    face = engine.prepare(data.astronaut())
    speech = Audio(np.zeros(16000, np.float32), 16000)
    batches = engine.frames_with_alpha(face, speech, "surprised", load_pose("lively", 25), source_matte(face, matting))
    for frames, alpha in batches:
        for frame, a in zip(frames, alpha):
            # a head turned by several degrees: dlib's jaw line on it lies up to 3 px off the photo's own (whose
            # matte is warped along), and a turned head's box corners reach the backdrop beside the neck
            hull, _ = face_region(frame, inset_px=3)
            assert a[hull].min() > 0.9


def test_lite_background_shortcut_equals_compositing_each_frame(matting):
    """frames_on_background (composite the photo once, then warp) == warp, then composite with the warped matte."""
    from avatar.head.lite import LiteEngine
    from avatar.head.poses import load_pose
    from avatar.core.types import Audio

    engine = LiteEngine(size=256, batch_size=8)
    face = engine.prepare(data.astronaut())
    speech = Audio(np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32), 16000)
    matte, pose = source_matte(face, matting), load_pose("lively", 13)
    fast = np.concatenate(list(engine.frames_on_background(face, speech, "happy", pose, matte, (0, 0, 255))))
    slow = np.concatenate([matting.composite(f, a, (0, 0, 255))
                           for f, a in engine.frames_with_alpha(face, speech, "happy", pose, matte)])
    diff = np.abs(fast.astype(int) - slow)
    assert fast.shape == slow.shape == (12, 256, 256, 3)  # n_frames(0.5 s)
    assert diff.mean() < 0.5 and np.percentile(diff, 99.9) < 12


def _fuzzy_disc(size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(photo, true matte, a segmenter-like matte): dark 'hair' on a pale, slightly noisy backdrop with a soft edge;
    the segmenter's matte is the truth blurred and spilling 4 px over the backdrop, as segmentation edges do."""
    import cv2

    yy, xx = np.mgrid[:size, :size]
    radius = np.hypot(yy - size / 2, xx - size / 2)
    truth = np.clip((size * 0.3 - radius) / 4 + 0.5, 0, 1).astype(np.float32)
    rng = np.random.default_rng(0)
    backdrop = np.array([222, 214, 208], np.float32) + rng.normal(0, 3, (size, size, 3))
    hair = np.array([96, 74, 46], np.float32) + rng.normal(0, 8, (size, size, 3))
    photo = np.clip(truth[..., None] * hair + (1 - truth[..., None]) * backdrop, 0, 255).astype(np.uint8)
    spilled = np.clip((size * 0.3 + 4 - radius) / 6 + 0.5, 0, 1).astype(np.float32)
    return photo, truth, cv2.GaussianBlur(spilled, (0, 0), 1.5)


def _fringe(photo: np.ndarray, matte: np.ndarray, truth: np.ndarray, colour=(20, 40, 30)) -> float:
    """Mean brightness above the new colour on the pixels that are backdrop in truth but not in the matte."""
    from avatar.matting import composite

    out = composite(photo[None], matte[None], colour)[0].astype(np.float32)
    band = (truth < 0.02) & (matte > 0.05)
    return float((out[band].mean(1) - np.mean(colour)).mean())


def test_clean_edge_removes_the_pale_fringe_of_the_old_backdrop():
    from avatar.matting import clean_edge

    photo, truth, matte = _fuzzy_disc()
    before = _fringe(photo, matte, truth)
    colours, cleaned = clean_edge(photo, matte)
    after = _fringe(colours, cleaned, truth)
    print(f"fringe over the new colour: {before:.1f} levels before, {after:.1f} after (limit 8)")
    assert before > 40 and after < 8
    inside = truth > 0.99
    assert np.abs(cleaned[inside] - matte[inside]).max() < 0.02  # the solid part keeps its matte
    assert np.abs(colours[inside].astype(int) - photo[inside]).max() == 0


def test_lite_cutout_has_no_pale_rim_around_the_hair(matting):
    """On the astronaut (fair hair, pale backdrop) over a dark colour: the ring just outside the hair is not lifted
    towards the old backdrop's brightness."""
    import cv2

    from avatar.head.lite import LiteEngine
    from avatar.render import source_cutout

    face = LiteEngine(size=256).prepare(data.astronaut())
    raw = source_matte(face, matting)
    colours, cleaned = source_cutout(face, matting)
    dark = (20, 40, 30)
    ring = (cv2.dilate((raw > 0.5).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0) & (raw < 0.5)
    ring[200:] = False  # the hair, not the suit

    def lift(photo, matte):
        from avatar.matting import composite

        return float(composite(photo[None], matte[None], dark)[0][ring].mean() - np.mean(dark))

    before, after = lift(face.crop, raw), lift(colours, cleaned)
    print(f"rim around the hair over a dark colour: {before:.1f} levels before, {after:.1f} after")
    assert after < 0.6 * before
