"""Face preparation on real photos (skimage's astronaut) and on every kind of bad photo."""
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from avatar.core.config import LimitsConfig
from avatar.core.errors import BadImage, FaceTooSmall, NoFaceFound
from avatar.head.face import FaceBox, align_crop, detect_faces, landmarks68, prepare_face


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def _eye_centres(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return points[36:42].mean(0), points[42:48].mean(0)


def test_detects_exactly_one_face_on_the_astronaut(astronaut):
    boxes = detect_faces(astronaut)
    assert len(boxes) == 1  # upsample 0 first: no false second face on the suit
    box = boxes[0]
    assert isinstance(box, FaceBox) and 70 < box.side < 120
    assert 170 < (box.left + box.right) / 2 < 280 and 70 < (box.top + box.bottom) / 2 < 180


def test_landmarks_are_a_plausible_face(astronaut):
    pts = landmarks68(astronaut, detect_faces(astronaut)[0])
    assert pts.shape == (68, 2) and pts.dtype == np.float32
    left, right = _eye_centres(pts)
    assert right[0] - left[0] > 30  # image-left eye is the subject's right eye
    assert pts[30, 1] > left[1] and pts[57, 1] > pts[30, 1] and pts[8, 1] > pts[57, 1]  # eyes, nose, mouth, chin


@pytest.mark.parametrize("size", [256, 512])
def test_prepare_face_gives_the_vox_crop(astronaut, size):
    face = prepare_face(astronaut, size)
    assert face.crop.shape == (size, size, 3) and face.crop.dtype == np.uint8
    assert face.warnings == ()
    pts = face.landmarks
    assert pts.min() > 0 and pts.max() < size
    # EAT's vox rule: the landmark width is 1/2.1 of the side; centred horizontally
    width = pts[:, 0].max() - pts[:, 0].min()
    assert width == pytest.approx(size / 2.1, rel=0.03)
    assert abs((pts[:, 0].max() + pts[:, 0].min()) / 2 - size / 2) < size * 0.02
    # crop landmarks are the photo landmarks through the returned transform
    m = face.cache["transform"]
    mapped = face.cache["photo_landmarks"] @ m[:2, :2].T + m[:2, 2]
    np.testing.assert_allclose(mapped, pts, atol=1e-3)


def test_template_alignment_maps_landmarks_onto_the_template(astronaut):
    pts = landmarks68(astronaut, detect_faces(astronaut)[0])
    vox = prepare_face(astronaut, 256).landmarks
    template = vox * 0.9 + 12.0  # a template in 256 coordinates (EAT's M003_template.npy has this form)
    crop, matrix, crop_pts = align_crop(astronaut, pts, 512, template)
    assert crop.shape == (512, 512, 3) and matrix.shape == (3, 3)
    # rows 0..46 land on the template scaled to 512 (a similarity fits them almost exactly here)
    assert np.abs(crop_pts[:47] - template[:47] * 2).max() < 1.0


def test_no_face_on_a_gradient():
    gradient = np.tile(np.linspace(0, 255, 400, dtype=np.uint8)[None, :, None], (300, 1, 3))
    with pytest.raises(NoFaceFound, match="no face found"):
        prepare_face(gradient)


def test_tiny_face_names_the_minimum(astronaut):
    import cv2

    tiny = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)  # face ~43 px: found with upsample 1
    assert len(detect_faces(tiny)) == 1
    with pytest.raises(FaceTooSmall, match="at least 64 px"):
        prepare_face(tiny)


def test_a_small_face_in_a_large_photo_is_found(astronaut):
    """An ~80 px face (above the 64 px minimum) in a 4000x3000 photo: the first pass, at 1024 px, cannot see it."""
    small = cv2.resize(astronaut, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    canvas = np.full((3000, 4000, 3), 128, np.uint8)
    canvas[1300:1300 + small.shape[0], 1800:1800 + small.shape[1]] = small
    face = prepare_face(canvas, 256)
    assert 64 <= face.cache["box"].side <= 110
    assert 1800 < face.cache["box"].left < 1800 + small.shape[1]


def test_crops_from_large_photos_are_area_filtered(astronaut):
    """Shrinking a 12x larger photo to the crop averages it (warpAffine alone samples bilinearly: fine stripes
    alias into moire); the crop of a smooth photo is the same either way."""
    pts = landmarks68(astronaut, detect_faces(astronaut)[0]) * 12
    stripes = np.zeros((6144, 6144, 3), np.uint8)
    stripes[:, ::2] = 255  # 2 px period: far above what a 1/14 scale can show
    crop, _, _ = align_crop(stripes, pts, 256)
    assert abs(crop.mean() - 127.5) < 3 and crop.std() < 20  # grey (bilinear sampling: std near 100)
    big = cv2.resize(astronaut, None, fx=12, fy=12, interpolation=cv2.INTER_LINEAR)
    want, _, _ = align_crop(astronaut, pts / 12, 256)
    got, _, _ = align_crop(big, pts, 256)
    assert np.abs(got.astype(int) - want).mean() < 4


def test_two_faces_use_the_largest_with_a_warning(astronaut):
    import cv2

    smaller = cv2.resize(astronaut, (384, 384))
    pad = np.zeros((128, 384, 3), np.uint8)
    pair = np.concatenate([np.concatenate([smaller, pad]), astronaut], axis=1)
    face = prepare_face(pair, 256)
    assert face.warnings == ("2 faces found; using the largest",)
    box = face.cache["box"]
    assert box.left > 384  # the full-size astronaut on the right


def test_random_bytes_are_not_an_image(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(BadImage, match="not an image"):
        prepare_face(path)


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P"])
def test_other_image_modes_are_accepted(astronaut, tmp_path, mode):
    path = tmp_path / f"photo_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
    Image.fromarray(astronaut).convert(mode).save(path)
    face = prepare_face(path, 256)
    assert face.crop.shape == (256, 256, 3)
    if mode == "L":
        assert np.abs(face.crop[..., 0].astype(int) - face.crop[..., 2]).max() == 0


def test_grey_and_rgba_arrays_are_accepted(astronaut):
    grey = astronaut.mean(axis=2).astype(np.uint8)
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    assert prepare_face(grey).crop.shape == (256, 256, 3)
    assert prepare_face(rgba).crop.shape == (256, 256, 3)


def test_large_photos_are_downscaled_first(astronaut):
    face = prepare_face(astronaut, 256, LimitsConfig(max_image_side=400))
    assert face.cache["transform"][0, 0] > 1.0  # photo px -> crop px: the 400 px copy was used
    assert face.cache["photo_landmarks"].max() < 400
    reference = prepare_face(astronaut, 256)
    assert np.abs(face.landmarks - reference.landmarks).mean() < 3.0  # the same framing


def test_path_input_and_missing_file(astronaut, tmp_path):
    path = Path(tmp_path) / "a.png"
    Image.fromarray(astronaut).save(path)
    assert prepare_face(path).crop.shape == (256, 256, 3)
    with pytest.raises(BadImage, match="not found"):
        prepare_face(tmp_path / "missing.png")
