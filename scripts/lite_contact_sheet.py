"""Renders the README's picture of the lite face (docs/lite_face.jpg): skimage's astronaut at 512 px, face crops.

Top row: the photo, then neutral (her smile taken out), happy, sad, angry, surprised. Bottom row: mouths of a sentence
spoken by our Piper voice (its visemes: /a/, /i/, /u/, /m/), a blink at its peak, the head turned by the "lively"
pose's yaw.

    .venv/bin/python scripts/lite_contact_sheet.py [--out docs/lite_face.jpg]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SENTENCE = "Bob, you see the big blue sea."
CROP = (slice(96, 416), slice(96, 416))  # the face of a 512 px frame
PICKS = {"aa": "/a/", "ih": "/i/", "ou": "/u/", "PP": "/m/ /b/"}


def _frame_at(engine, face, speech, index: int, pose=None, emotion: str = "neutral") -> np.ndarray:
    from avatar.head import n_frames
    from avatar.head.poses import still_pose

    pose = pose if pose is not None else still_pose(n_frames(speech.duration_s))
    return np.concatenate(list(engine.frames(face, speech, emotion, pose)))[index]


def _viseme_frames(speech) -> dict[str, int]:
    """The frame showing the middle of the longest span of each picked viseme (the mouth leads the sound)."""
    from avatar.head.lite.mouth import LEAD_S

    v, picks = speech.visemes, {}
    for label in PICKS:
        spans = [(e - s, (s + e) / 2) for s, e, lab in zip(v.start_s, v.end_s, v.labels) if lab == label]
        picks[label] = int(round((max(spans)[1] - LEAD_S) * 25 - 0.5))
    return picks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "lite_face.jpg")
    args = ap.parse_args(argv)
    import cv2
    from skimage import data

    from avatar.core.config import AvatarConfig
    from avatar.core.types import Audio
    from avatar.head.lite import LiteEngine, blink_track
    from avatar.head.poses import load_pose
    from avatar.tts import Tts

    engine = LiteEngine(size=512)
    face = engine.prepare(data.astronaut())
    quiet = Audio(np.zeros(16000 * 4, np.float32), 16000)
    top = [face.crop] + [_frame_at(engine, face, quiet, 5, emotion=e)
                         for e in ("neutral", "happy", "sad", "angry", "surprised")]
    speech = Tts.load(AvatarConfig()).synthesize(SENTENCE, "en")
    bottom = [_frame_at(engine, face, speech, i) for i in _viseme_frames(speech).values()]
    bottom.append(_frame_at(engine, face, quiet, int(np.argmax(blink_track(100, engine.seed)))))
    lively = load_pose("lively", 300)
    turned = int(np.argmax(np.abs(lively.angles_deg[:, 0])))
    bottom.append(_frame_at(engine, face, Audio(np.zeros(16000 * 12, np.float32), 16000), turned, lively))
    rows = [np.concatenate([f[CROP] for f in row], axis=1) for row in (top, bottom)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(np.concatenate(rows), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
