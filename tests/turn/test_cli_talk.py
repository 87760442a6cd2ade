"""`python -m avatar talk`: the CLI's spoken turn runs the same pipeline as the Talk tab (a real subprocess)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from avatar.core import media

ROOT = Path(__file__).resolve().parents[2]


def test_talk_answers_a_spoken_question_with_a_video(tmp_path, astronaut_png, speech_wav):
    out = tmp_path / "reply.mp4"
    proc = subprocess.run([sys.executable, "-m", "avatar", "talk", "--photo", str(astronaut_png), "--audio",
                           str(speech_wav), "--size", "256", "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "fellow americans" in proc.stdout.lower() and "avatar> " in proc.stdout
    info = media.probe(out)
    assert info.video_codec == "h264" and info.audio_codec == "aac" and info.video_duration_s > 1.0
    assert abs(info.video_duration_s - info.audio_duration_s) < 0.1


def test_talk_refuses_a_bad_colour_before_loading_models(tmp_path, astronaut_png):
    proc = subprocess.run([sys.executable, "-m", "avatar", "talk", "--photo", str(astronaut_png), "--text", "Hi",
                           "--background", "#zz", "--out", str(tmp_path / "x.mp4")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 2 and "colour" in proc.stderr and "Traceback" not in proc.stderr
