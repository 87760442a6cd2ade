"""`python -m avatar ...` as a user runs it: real subprocesses, real files, exit codes and messages."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from avatar.core import media

from .conftest import ROOT


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avatar", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_transcribe_prints_the_text(speech_wav):
    proc = run("transcribe", str(speech_wav), "--lang", "en")
    assert proc.returncode == 0, proc.stderr
    assert "fellow americans" in proc.stdout.lower()


@pytest.mark.parametrize("args,message", [
    (("transcribe", "{fake}"), "not an audio file"),
    (("transcribe", "{wav}", "--lang", "fr"), "unknown language"),
    (("say", "", "--out", "{out}"), "empty"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, speech_wav, args, message):
    fake = tmp_path / "fake.wav"
    fake.write_bytes(b"hello" * 100)
    args = [a.format(fake=fake, wav=speech_wav, out=tmp_path / "o.wav") for a in args]
    proc = run(*args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_say_writes_a_wav(tmp_path):
    out = tmp_path / "hello.wav"
    proc = run("say", "Hello there, how are you today?", "--lang", "en", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert media.load_audio(out).duration_s > 1.0


def test_chat_once(tmp_path):
    proc = run("chat", "--text", "Say hello in one short sentence.")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_render_from_text_with_background(tmp_path, astronaut_png):
    out = tmp_path / "out.mp4"
    proc = run("render", "--photo", str(astronaut_png), "--text", "Hello! Nice to meet you.", "--emotion", "happy",
               "--pose", "nod", "--background", "#00ff00", "--size", "256", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    info = media.probe(out)
    assert info.video_codec == "h264" and info.audio_codec == "aac" and info.width == 256
    assert abs(info.video_duration_s - info.audio_duration_s) < 0.05
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rendered ")]  # the progress, on stderr
    assert lines and lines[-1] == f"rendered {info.n_frames}/{info.n_frames} frames", proc.stderr


def test_render_without_a_face_is_a_clear_error(tmp_path, speech_wav):
    import numpy as np

    flat = media.save_png(np.full((300, 300, 3), 128, np.uint8), tmp_path / "flat.png")
    proc = run("render", "--photo", str(flat), "--audio", str(speech_wav), "--out", str(tmp_path / "x.mp4"))
    assert proc.returncode == 2 and "no face found" in proc.stderr.lower()


def test_doctor_json_lists_every_stage():
    proc = run("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    text = json.dumps(report)
    for stage in ("asr", "tts", "chat", "head", "matting", "enhance"):
        assert stage in text
    stages = {"asr", "tts", "chat", "head", "matting", "enhance"}  # every stage has its own entry, not just a mention
    assert set(report["stages"]) == set(report["original_ready"]) == set(report["runs"]) == stages


@pytest.mark.parametrize("command", ["say", "matte"])
def test_out_in_a_folder_that_does_not_exist_is_created(tmp_path, astronaut_png, command):
    out = tmp_path / "new" / "folder" / ("hello.wav" if command == "say" else "matte.png")
    args = ("say", "Hello there.", "--lang", "en") if command == "say" else ("matte", str(astronaut_png))
    proc = run(*args, "--out", str(out))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert out.is_file() and out.stat().st_size > 1000


def test_out_with_a_tilde_the_shell_did_not_expand(tmp_path, astronaut_png, monkeypatch):
    """--out=~/x: the shell leaves this ~ alone; the folder made and the file written must be the same place."""
    monkeypatch.setenv("HOME", str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "avatar", "matte", str(astronaut_png), "--out=~/sub/m.png"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "sub" / "m.png").is_file()


def test_out_folder_that_cannot_be_created_is_a_clear_error_before_any_model_loads(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    proc = run("say", "Hello.", "--out", str(blocker / "sub" / "x.wav"), timeout=60)
    assert proc.returncode == 2 and "cannot create the folder for --out" in proc.stderr, proc.stderr


def test_download_accepts_the_documented_accept_licences_option(tmp_path):
    from avatar.cli import build_parser

    args = build_parser().parse_args(["download", "eat", "--accept-licences"])
    assert args.yes is True and args.names == ["eat"]
    proc = run("--weights-dir", str(tmp_path), "download", "--accept-licences", "--list", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "eat" in proc.stdout and str(tmp_path) in proc.stdout


@pytest.mark.parametrize("toml,message", [
    (None, "config file not found"),
    ('[asr]\nbackend = "wisper"\n', "config [asr] backend = 'wisper' is not one of"),
])
def test_app_with_a_bad_config_prints_the_error_and_exits_2(tmp_path, toml, message):
    config = tmp_path / "app.toml"
    if toml is not None:
        config.write_text(toml)
    proc = subprocess.run([sys.executable, "app.py", "--config", str(config)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and f"error: {message}" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("auth", ["nocolon", ":pass", "user:", ""])
def test_app_auth_format_is_checked_with_the_arguments(auth, capsys):
    from app import parse_args

    with pytest.raises(SystemExit) as exit_:
        parse_args(["--auth", auth])
    assert exit_.value.code == 2 and "must look like user:pass" in capsys.readouterr().err
    assert parse_args(["--auth", "alice:s3cr:et"]).credentials == {"alice": "s3cr:et"}  # a password may hold ":"
