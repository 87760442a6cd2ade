"""The lite talking head, measured from its output: landmarks are re-detected on the rendered frames with dlib
(avatar.head.face) and compared with the audio, the emotion and the pose that drove them."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from avatar.head.face import detect_faces, landmarks68
from avatar.head.lite import LiteEngine, blink_track, mouth_track
from avatar.core.media import load_audio, save_png
from avatar.head.poses import load_pose, still_pose
from avatar.head import n_frames
from avatar.core.types import EMOTIONS, Audio

SPEECH = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "speech"
SAMPLE_RATE = 16000
HOP = SAMPLE_RATE // 25  # samples per video frame
INNER_LIP_PAIRS = [(61, 67), (62, 66), (63, 65)]


@pytest.fixture(scope="module")
def engine() -> LiteEngine:
    return LiteEngine(size=256, batch_size=16)


@pytest.fixture(scope="module")
def face(engine):
    return engine.prepare(data.astronaut())


@pytest.fixture(scope="module")
def jfk() -> Audio:
    return load_audio(SPEECH / "jfk.flac", SAMPLE_RATE)


def silence(seconds: float) -> Audio:
    return Audio(np.zeros(int(seconds * SAMPLE_RATE), np.float32), SAMPLE_RATE)


def render(engine, face, speech, emotion="neutral", pose=None, intensity=1.0) -> np.ndarray:
    pose = pose if pose is not None else still_pose(n_frames(speech.duration_s))
    return np.concatenate(list(engine.frames(face, speech, emotion, pose, intensity)))


def track(frames: np.ndarray) -> np.ndarray:
    """(T,68,2) landmarks re-detected on every frame (NaN where no face is found)."""
    out = np.full((len(frames), 68, 2), np.nan, np.float32)
    for i, frame in enumerate(frames):
        boxes = detect_faces(frame)
        if boxes:
            out[i] = landmarks68(frame, boxes[0])
    return out


def iod(points: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points[..., 42:48, :].mean(-2) - points[..., 36:42, :].mean(-2), axis=-1)


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """Inner-lip gap in inter-ocular distances (scale-free)."""
    gaps = [np.linalg.norm(points[..., a, :] - points[..., b, :], axis=-1) for a, b in INNER_LIP_PAIRS]
    return np.mean(gaps, axis=0) / iod(points)


def energy_envelope_db(samples: np.ndarray, n: int) -> np.ndarray:
    """Per 40 ms frame: RMS energy in dB, floored 40 dB under the loudest frame."""
    frames = np.pad(samples, (0, max(0, n * HOP - len(samples))))[: n * HOP].reshape(n, HOP)
    db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-10)
    return np.maximum(db, db.max() - 40)


def similarity_align(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """src (68,2) moved by the least-squares similarity (rotation, scale, translation) onto dst."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, s, vt = np.linalg.svd(a.T @ b)
    rotation = u @ vt
    return (a @ rotation) * (s.sum() / (a ** 2).sum()) + md


def shape_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The emotion metric: mean landmark displacement (px) between two mean landmark configurations after
    similarity alignment of a onto b, so head position, size and roll do not count, only the expression."""
    return float(np.linalg.norm(similarity_align(a, b) - b, axis=1).mean())


# ---------------------------------------------------------------- frames and the interface
def test_frames_are_batches_of_exact_total_length(engine, face, jfk):
    batches = list(engine.frames(face, jfk, "happy", load_pose("talking", 10)))  # a short pose is ping-ponged
    assert all(b.dtype == np.uint8 and b.ndim == 4 and b.shape[1:] == (256, 256, 3) for b in batches)
    assert max(len(b) for b in batches) == 16
    assert sum(len(b) for b in batches) == n_frames(jfk.duration_s) == 275
    short = Audio(jfk.samples[: int(0.3 * SAMPLE_RATE)], SAMPLE_RATE)
    assert sum(len(b) for b in engine.frames(face, short, "neutral", still_pose(8))) == 8


def test_load_from_config_and_sizes():
    from avatar.core.config import AvatarConfig

    eng = LiteEngine.load(AvatarConfig().replace(**{"head.size": 512}))
    assert eng.name == "lite" and eng.size == 512 and eng.device == "cpu"
    prepared = eng.prepare(data.astronaut())
    assert prepared.crop.shape == (512, 512, 3) and "lite_mesh" in prepared.cache
    frames = next(eng.frames(prepared, silence(0.2), "neutral", still_pose(5)))
    assert frames.shape == (5, 512, 512, 3)
    with pytest.raises(ValueError):
        LiteEngine(size=300)


def test_unknown_emotion_is_a_domain_error(engine, face):
    from avatar.core.errors import UnknownEmotion

    with pytest.raises(UnknownEmotion):
        next(engine.frames(face, silence(0.5), "bored", still_pose(12)))


# ---------------------------------------------------------------- speech drives the lips
def test_lip_motion_follows_speech_and_closes_in_silence(engine, face, jfk):
    cut, gap_s = 5 * SAMPLE_RATE, 1.6
    samples = np.concatenate([jfk.samples[:cut], np.zeros(int(gap_s * SAMPLE_RATE), np.float32), jfk.samples[cut:]])
    speech = Audio(samples, SAMPLE_RATE)
    frames = render(engine, face, speech)
    opening = mouth_opening(track(frames))
    assert not np.isnan(opening).any()
    r = np.corrcoef(opening, energy_envelope_db(samples, len(frames)))[0, 1]
    print(f"lip sync: Pearson r = {r:.3f}")
    assert r >= 0.6, f"mouth opening vs energy envelope: Pearson r = {r:.3f}"
    own = float(mouth_opening(track(face.crop[None]))[0])
    quiet = opening[5 * 25 + 5: int((5 + gap_s) * 25) - 2]  # the inserted silence, after a 200 ms release
    assert quiet.max() < own + 0.03, f"mouth open in silence: {quiet.max():.3f} vs the photo's {own:.3f}"
    assert opening.max() > own + 0.15  # and it really opens when speaking


def test_mouth_track_gates_silence_and_is_bounded(jfk):
    samples = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), jfk.samples[: 3 * SAMPLE_RATE]])
    mouth = mouth_track(Audio(samples, SAMPLE_RATE), 100)
    assert mouth.opening.shape == (100,) and mouth.width.shape == (100,)
    assert np.all(mouth.opening[:24] == 0) and mouth.opening[25:].max() > 0.8
    assert mouth.opening.min() >= 0 and mouth.opening.max() <= 1 and np.abs(mouth.width).max() <= 1
    at_44k = mouth_track(load_audio(SPEECH / "jfk.flac", 44100), 275)  # any rate gives the same track
    at_16k = mouth_track(jfk, 275)
    r = np.corrcoef(at_44k.opening, at_16k.opening)[0, 1]
    print(f"mouth track at 44.1 vs 16 kHz: r = {r:.4f} (limit 0.97)")
    assert r > 0.97


# ---------------------------------------------------------------- emotions
JITTER_FRAMES = 32  # 12 left a noise floor (0.23 px) within one noise of the limits it sets; 32: sqrt(32/12)x lower


def jitter_pose(n: int = JITTER_FRAMES):
    """A still head shifted by sub-pixel steps (+-1.3 px): averaging re-detections over it cancels dlib's jitter."""
    pose = still_pose(n)
    pose.translation[:, 0] = np.linspace(-0.01, 0.01, n)
    pose.translation[:, 1] = np.linspace(0.01, -0.01, n)[np.random.default_rng(0).permutation(n)]
    return pose


@pytest.fixture(scope="module")
def emotion_tracks(engine, face) -> dict[str, np.ndarray]:
    """Per emotion: landmarks re-detected on 12 frames (silence, still head with sub-pixel jitter)."""
    return {e: track(render(engine, face, silence(JITTER_FRAMES / 25), e, jitter_pose())) for e in EMOTIONS}


@pytest.fixture(scope="module")
def emotion_shapes(emotion_tracks) -> dict[str, np.ndarray]:
    return {e: np.nanmean(points, axis=0) for e, points in emotion_tracks.items()}


def test_each_pair_of_emotions_is_measurably_distinct(emotion_tracks, emotion_shapes):
    # noise floor of the metric: split-half means of the same (neutral) frames
    neutral = emotion_tracks["neutral"]
    noise = shape_distance(np.nanmean(neutral[0::2], axis=0), np.nanmean(neutral[1::2], axis=0))
    threshold = max(0.8, 3 * noise)
    pairs = {(a, b): shape_distance(emotion_shapes[a], emotion_shapes[b])
             for i, a in enumerate(EMOTIONS) for b in EMOTIONS[i + 1:]}
    closest = sorted(pairs, key=pairs.get)[:3]
    print("closest emotions:", ", ".join(f"{a}-{b} {pairs[a, b]:.2f} px" for a, b in closest),
          f"(limit {threshold:.2f} px, noise {noise:.2f})")
    for (a, b), d in pairs.items():
        assert d > threshold, f"{a} vs {b}: {d:.2f} px <= {threshold:.2f} px (noise {noise:.2f})"


def _aligned(emotion_shapes, emotion) -> np.ndarray:
    return similarity_align(emotion_shapes[emotion], emotion_shapes["neutral"])


def test_happy_raises_and_sad_lowers_the_mouth_corners(emotion_shapes):
    neutral = emotion_shapes["neutral"]
    corner_dy = {e: (_aligned(emotion_shapes, e)[[48, 54], 1] - neutral[[48, 54], 1]) for e in ("happy", "sad")}
    print(f"mouth corners dy: happy {corner_dy['happy'].round(2)} (limit < -1.5), sad {corner_dy['sad'].round(2)} "
          "(limit > 1.5)")
    assert np.all(corner_dy["happy"] < -1.5), corner_dy  # image y grows downwards
    assert np.all(corner_dy["sad"] > 1.5), corner_dy


def test_sad_raises_inner_brows_and_angry_lowers_brows(emotion_shapes):
    neutral = emotion_shapes["neutral"]
    sad, angry = _aligned(emotion_shapes, "sad"), _aligned(emotion_shapes, "angry")
    print(f"inner brows sad {(sad[[21, 22], 1] - neutral[[21, 22], 1]).mean():.2f} (limit < -1.0), brows angry "
          f"{(angry[17:27, 1] - neutral[17:27, 1]).mean():.2f} (limit > 1.0), knit "
          f"{(angry[22, 0] - angry[21, 0]) - (neutral[22, 0] - neutral[21, 0]):.2f} (limit < -0.5)")
    assert (sad[[21, 22], 1] - neutral[[21, 22], 1]).mean() < -1.0
    assert (angry[17:27, 1] - neutral[17:27, 1]).mean() > 1.0
    assert (angry[22, 0] - angry[21, 0]) < (neutral[22, 0] - neutral[21, 0]) - 0.5  # knitted


def test_surprised_raises_brows_and_opens_eyes(emotion_shapes):
    neutral, surprised = emotion_shapes["neutral"], _aligned(emotion_shapes, "surprised")

    def eye_opening(p):
        return (p[[41, 40, 47, 46], 1] - p[[37, 38, 43, 44], 1]).mean()

    print(f"surprised brows {(surprised[17:27, 1] - neutral[17:27, 1]).mean():.2f} (limit < -2.5), eyes "
          f"{eye_opening(surprised) - eye_opening(neutral):.2f} (limit > 1.0)")
    assert (surprised[17:27, 1] - neutral[17:27, 1]).mean() < -2.5
    assert eye_opening(surprised) > eye_opening(neutral) + 1.0


def test_intensity_scales_the_expression(engine, face, emotion_tracks, emotion_shapes):
    half = np.nanmean(track(render(engine, face, silence(JITTER_FRAMES / 25), "happy", jitter_pose(), intensity=0.5)), axis=0)
    full, neutral = emotion_shapes["happy"], emotion_shapes["neutral"]
    assert shape_distance(neutral, neutral) < shape_distance(half, neutral) < shape_distance(full, neutral)
    # half intensity must move the face beyond the metric's noise floor (split-half means of neutral frames),
    # and stay clearly short of full intensity
    points = emotion_tracks["neutral"]
    noise = shape_distance(np.nanmean(points[0::2], axis=0), np.nanmean(points[1::2], axis=0))
    print(f"intensity: half {shape_distance(half, neutral):.2f} px, full {shape_distance(full, neutral):.2f} px, "
          f"noise {noise:.2f} px")
    assert 2 * noise < shape_distance(half, neutral) < 0.9 * shape_distance(full, neutral)


# ---------------------------------------------------------------- head pose, blinks, identity
def test_head_follows_the_pose_sequence(engine, face):
    n = 200
    pose = load_pose("lively", n)
    points = track(render(engine, face, silence(n / 25), "neutral", pose))
    left, right = points[:, 36:42].mean(1), points[:, 42:48].mean(1)
    roll_deg = np.degrees(np.arctan2(right[:, 1] - left[:, 1], right[:, 0] - left[:, 0]))
    upper_face = points[:, 17:48].mean(1)  # brows, nose, eyes: no mouth or jaw motion in it
    r_roll = np.corrcoef(roll_deg, pose.angles_deg[:, 2])[0, 1]
    r_x = np.corrcoef(upper_face[:, 0], pose.translation[:, 0])[0, 1]
    r_y = np.corrcoef(upper_face[:, 1], pose.translation[:, 1])[0, 1]
    print(f"pose follows the sequence: roll r = {r_roll:.3f}, x r = {r_x:.3f}, y r = {r_y:.3f}")
    assert r_roll >= 0.8 and r_x >= 0.8 and r_y >= 0.8
    assert np.ptp(roll_deg) > 4.0  # degrees: clearly visible motion


def test_blinks_every_two_to_six_seconds(engine, face):
    closure = blink_track(30 * 25, seed=0)
    starts = np.flatnonzero((closure[1:] > 0) & (closure[:-1] == 0)) + 1
    gaps_s = np.diff(starts) / 25
    assert len(starts) >= 5 and gaps_s.min() >= 2.0 and gaps_s.max() <= 6.0
    assert not np.array_equal(closure, blink_track(30 * 25, seed=1))  # seeded
    continued = np.concatenate([blink_track(70, seed=0), blink_track(30 * 25 - 70, seed=0, start_frame=70)])
    assert np.array_equal(continued, closure)  # a later sentence continues the schedule, no repeat at its start
    frames = render(engine, face, silence(4.0))
    peak = int(np.argmax(blink_track(len(frames), engine.seed)))
    dark = [dark_eye_share(frames[i], face.landmarks) for i in (0, peak)]
    assert dark[0] > 0.2 and dark[1] < 0.4 * dark[0], f"eyes not closed at the blink peak: dark share {dark}"


def dark_eye_share(frame: np.ndarray, landmarks: np.ndarray) -> float:
    """Share of the (open) eye outlines' pixels that are dark (iris, pupil, lashes) rather than skin. dlib's
    landmark model barely follows closed eyes (a shape prior), so a blink is measured on the pixels instead."""
    import cv2

    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mask = np.zeros(grey.shape, np.uint8)
    for eye in (landmarks[36:42], landmarks[42:48]):
        cv2.fillPoly(mask, [np.round(eye).astype(np.int32)], 1)
    skin = np.median(grey[int(landmarks[29, 1]) - 3: int(landmarks[29, 1]) + 3, int(landmarks[29, 0]) - 3:
                          int(landmarks[29, 0]) + 3])
    return float((grey[mask > 0] < 0.6 * skin).mean())


def test_identity_is_kept_when_nothing_drives_the_face(engine, face):
    frames = render(engine, face, silence(0.4), "neutral")  # still head, silence, neutral, no blink yet
    diff = np.abs(frames.astype(np.int16) - face.crop.astype(np.int16))
    assert diff.mean() < 1.0 and np.percentile(diff, 99.9) <= 6


def test_background_outside_the_head_is_preserved(engine, face, jfk):
    frames = render(engine, face, jfk, "happy", load_pose("talking", 275))
    band = np.zeros((256, 256), bool)
    band[:12], band[-12:], band[:, :12], band[:, -12:] = True, True, True, True
    diff = np.abs(frames[:, band].astype(np.int16) - face.crop[band].astype(np.int16))
    assert diff.mean() < 2.5, f"border band changed by {diff.mean():.2f} levels"


def test_contact_sheet(engine, face, jfk, artifacts):
    """Saves emotions (rows) x time (columns) frames for a human look: test-artifacts/test_lite/test_contact_sheet/."""
    times = [0, 25, 60, 100, 140, 180, 220, 260]
    rows = []
    for emotion in EMOTIONS:
        frames = render(engine, face, jfk, emotion, load_pose("talking", 275))
        rows.append(np.concatenate([frames[t] for t in times], axis=1))
    sheet = np.concatenate(rows, axis=0)
    path = save_png(sheet, artifacts / "contact_sheet.png")
    assert path.stat().st_size > 100_000 and sheet.shape == (8 * 256, 8 * 256, 3)


# ---------------------------------------------------------------- long audio
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20


def test_ten_minute_audio_streams_in_constant_memory(face, jfk):
    engine = LiteEngine(size=256, batch_size=8)
    ten_minutes = Audio(np.tile(jfk.samples, int(np.ceil(600 / jfk.duration_s)))[: 600 * SAMPLE_RATE], SAMPLE_RATE)
    gen = engine.frames(face, ten_minutes, "happy", load_pose("talking", 15000))
    first = next(gen)
    assert first.shape == (8, 256, 256, 3)
    tracemalloc.start()
    try:
        for _ in range(10):
            next(gen)
        base_traced, base_rss = tracemalloc.get_traced_memory()[0], _rss_mb()
        for _ in range(40):
            batch = next(gen)
        grown_traced, grown_rss = tracemalloc.get_traced_memory()[0] - base_traced, _rss_mb() - base_rss
    finally:
        tracemalloc.stop()
        gen.close()
    assert batch.shape == (8, 256, 256, 3)
    assert grown_traced < 2 * 2 ** 20, f"python/numpy memory grew by {grown_traced / 2**20:.1f} MB over 320 frames"
    assert grown_rss < 30, f"RSS grew by {grown_rss:.1f} MB over 320 frames"


def test_open_mouth_is_a_dark_cavity_with_teeth_not_a_smeared_lip(engine, face):
    """With a closed-mouth photo (the astronaut's own gap set to 0), a fully open jaw shows synthetic upper teeth
    right under the upper lip and a dark throat below them."""
    import cv2

    from avatar.head.lite import Mesh

    mesh = Mesh(**{**engine.mesh(face).__dict__, "source_gap_px": 0.0})
    target = mesh.source + mesh.open_basis
    frame = np.empty_like(face.crop)
    engine.render_frame(mesh, target, frame)
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(float)
    x = int(round(target[62, 0])) + 2  # beside the incisors' gap
    upper, lower = target[62, 1], target[66, 1]
    teeth = grey[int(upper + 0.12 * (lower - upper)), x]
    throat = grey[int(upper + 0.65 * (lower - upper)), x]
    skin = grey[int(target[29, 1]), int(target[29, 0])]
    assert teeth > 0.85 * skin and throat < 0.4 * skin, (teeth, throat, skin)
