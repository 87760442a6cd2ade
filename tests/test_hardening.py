"""One test per finding of the hostile-user review (issue 19), at the level where it was found: the system, the CLI,
the server's guards. Each fails on the code before the fix (a crash, a raw Python error, a decoded bomb, a leak)."""
from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from avatar.core import media
from avatar.core.errors import AvatarError, BadAudio, BadImage
from avatar.core.types import Audio
from tests.conftest import ROOT


def _nan_wav(path):
    import soundfile as sf

    x = (0.3 * np.sin(np.arange(32000) / 7)).astype(np.float32)
    x[1000:1100] = np.nan
    sf.write(str(path), x, 16000, subtype="FLOAT")
    return path


# ---------------------------------------------------------------- NaN audio
def test_nan_samples_are_refused_in_a_file_an_array_and_an_audio(tmp_path):
    with pytest.raises(BadAudio, match="invalid samples"):
        media.load_audio(_nan_wav(tmp_path / "nan.wav"))
    x = np.zeros(16000, np.float32)
    x[5] = np.inf
    with pytest.raises(BadAudio, match="invalid samples"):
        media.audio_from_array(x, 16000)
    with pytest.raises(BadAudio, match="invalid samples"):
        Audio(x, 16000)


def test_nan_audio_neither_transcribes_to_quote_marks_nor_crashes_the_render(system, astronaut, tmp_path):
    """It transcribed to a string of quote marks and killed the process in the lite warp (segfault)."""
    wav = _nan_wav(tmp_path / "nan.wav")
    with pytest.raises(BadAudio):
        system.transcribe(str(wav))
    with pytest.raises(BadAudio):
        system.render(astronaut, str(wav), "happy", "talking", None, 256, out_path=tmp_path / "x.mp4")
    x = (0.3 * np.sin(np.arange(16000) / 7)).astype(np.float32)
    x[100:200] = np.nan
    with pytest.raises(BadAudio):
        system.render(astronaut, (16000, x), "happy", "talking", None, 256, out_path=tmp_path / "y.mp4")


@pytest.mark.parametrize("rate", [0, -16000, 3, 10**7, 44100.5])
def test_impossible_sample_rates_are_refused(rate):
    with pytest.raises(BadAudio, match="sample rate"):
        media.audio_from_array(np.zeros(1000, np.float32), rate)


# ---------------------------------------------------------------- parameters
@pytest.mark.parametrize("colour", ["rgb(a,b,c)", "rgba(nan,0,0,1)", "rgb(", "#12345", "rgb(300,0,0)", "blue-ish",
                                    (1.0, float("nan"), 0.0)])
def test_bad_colours_are_a_sentence(system, astronaut, colour):
    with pytest.raises(AvatarError, match="colour"):
        system.matte(astronaut, colour)


@pytest.mark.parametrize("colour,rgb", [("rgba(47, 111, 79, 1)", (47, 111, 79)), ("#fff", (255, 255, 255)),
                                        ("RGB(0,255,0)", (0, 255, 0)), ("white", (255, 255, 255)), ("none", None)])
def test_colours_are_parsed_tolerantly(colour, rgb):
    from avatar.core.validate import parse_colour

    assert parse_colour(colour) == rgb


@pytest.mark.parametrize("intensity", [float("nan"), float("inf"), -1.0, 7.0, "high"])
def test_bad_intensity_is_refused_before_rendering(system, astronaut, speech_wav, intensity, tmp_path):
    with pytest.raises(AvatarError, match="intensity"):
        system.render(astronaut, str(speech_wav), "happy", "talking", None, 256, out_path=tmp_path / "x.mp4",
                      intensity=intensity)


def test_size_none_or_text_is_understood_and_nonsense_refused(system, astronaut, speech_wav, tmp_path):
    from avatar.core.validate import BadValue, video_size

    assert video_size(None, 256) == 256 and video_size("512", 256) == 512 and video_size(512, 256) == 512
    with pytest.raises(BadValue, match="256 or 512"):
        system.render(astronaut, str(speech_wav), "happy", "talking", None, 300, out_path=tmp_path / "x.mp4")


def test_control_characters_are_removed_from_text(system):
    from avatar.core.text import check_text

    assert check_text("a\x00b\u202ec\x1b[31m", 100) == "abc[31m"
    assert system.speak("Hello\x00 there.", "en").duration_s > 0.3  # it raised "embedded null character"


# ---------------------------------------------------------------- images
def test_a_one_pixel_strip_is_a_sentence(system, tmp_path):
    from PIL import Image

    for size in ((600, 1), (1, 10000), (10000, 1)):
        path = tmp_path / f"strip{size}.png"
        Image.new("RGB", size, (10, 20, 30)).save(path)
        for call in (system.prepare_photo, system.matte):
            with pytest.raises(BadImage, match="at least"):
                call(str(path))


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    """A 0.5 MB PNG of 13000x13000 px took the process to 4.8 GB; now its header is read, nothing decoded."""
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("RGB", (13000, 13000), (10, 200, 30)).save(bomb, optimize=True)
    code = textwrap.dedent(f"""
        import re, sys
        sys.path.insert(0, {str(ROOT)!r})
        from avatar.core import media
        from avatar.core.errors import BadImage
        try:
            media.load_image({str(bomb)!r})
        except BadImage as e:
            print("refused:", e)
        status = open("/proc/self/status").read()  # VmHWM: this program's peak (ru_maxrss keeps the parent's)
        print("peak_mb", int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    peak = float(out.split("peak_mb")[1])
    print(out.strip())
    assert "refused: the image is 13000x13000 px" in out and peak < 1000


# ---------------------------------------------------------------- ffmpeg reads uploads only, and only local ones
def test_a_playlist_cannot_make_ffmpeg_read_a_local_file(tmp_path):
    secret = media.save_wav(Audio((0.3 * np.sin(np.arange(32000) / 5)).astype(np.float32), 16000),
                            tmp_path / "secret.wav")
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nfile://{secret}\n#EXT-X-ENDLIST\n"
    for name in ("evil.m3u8", "evil.wav", "evil.mp3"):
        (tmp_path / name).write_text(playlist)
        with pytest.raises(BadAudio, match="not an audio file"):
            media.load_audio(tmp_path / name)
    assert media.load_audio(secret).duration_s == pytest.approx(2.0)  # a real file still decodes


# ---------------------------------------------------------------- CLI
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avatar", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("case", ["out-is-a-folder", "nan-audio", "nan-intensity", "strip-photo", "bad-colour"])
def test_cli_refuses_before_loading_models(case, tmp_path, astronaut_png, speech_wav):
    from PIL import Image

    strip = tmp_path / "strip.png"
    Image.new("RGB", (600, 1)).save(strip)
    args = {"out-is-a-folder": ["say", "hi", "--out", str(tmp_path)],
            "nan-audio": ["transcribe", str(_nan_wav(tmp_path / "nan.wav"))],
            "nan-intensity": ["render", "--photo", str(astronaut_png), "--audio", str(speech_wav), "--intensity",
                              "nan", "--out", str(tmp_path / "x.mp4")],
            "strip-photo": ["render", "--photo", str(strip), "--text", "hi", "--out", str(tmp_path / "x.mp4")],
            "bad-colour": ["matte", str(astronaut_png), "--background", "rgb(a,b,c)", "--out", str(tmp_path / "x.png")],
            }[case]
    proc = _cli("-v", *args)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: "), proc.stderr[-800:]
    assert "Traceback" not in proc.stderr
    assert "stage " not in proc.stderr, "a model was loaded before the arguments were checked"  # -v logs loads


# ---------------------------------------------------------------- server guards (avatar/server.py)
def test_logins_are_rate_limited_and_compared_in_constant_time():
    from avatar.server import LoginGuard

    guard = LoginGuard({"alice": "s3cret"}, max_failures=5, window_s=60, lockout_s=60)
    assert guard("alice", "s3cret")
    assert not any(guard("alice", f"guess{i}") for i in range(5))
    assert not guard("alice", "s3cret"), "the right password must wait out the lockout after 5 wrong ones"
    assert not guard("mallory", "s3cret") and not guard("", "")


def test_credentials_come_from_a_file_or_the_environment_not_the_command_line(tmp_path, monkeypatch):
    from avatar.server import AUTH_ENV, load_credentials

    file = tmp_path / "logins"
    file.write_text("alice:pa:ss\n# a comment\nbob:x\n")
    assert load_credentials(str(file)) == {"alice": "pa:ss", "bob": "x"}
    monkeypatch.setenv(AUTH_ENV, "carol:y")
    assert load_credentials() == {"carol": "y"}
    (tmp_path / "bad").write_text("nocolon")
    with pytest.raises(AvatarError, match="user:pass"):
        load_credentials(str(tmp_path / "bad"))


def test_uploads_per_client_are_capped():
    from avatar.server import UploadLimiter

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limiter = UploadLimiter(app, max_files=3, max_mb=10, window_s=600)

    def post(client: str, mb: float) -> int:
        sent = []

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/gradio_api/upload", "client": (client, 1),
                 "headers": [(b"content-length", str(int(mb * 1e6)).encode())]}
        asyncio.run(limiter(scope, None, send))
        return sent[0]["status"]

    assert [post("10.0.0.1", 1) for _ in range(4)] == [200, 200, 200, 429]
    assert post("10.0.0.2", 11) == 429 and post("10.0.0.2", 1) == 200  # bytes count too; clients apart


def test_chat_text_cannot_load_remote_images():
    from avatar.server import chat_text

    shown = chat_text('<img src="http://127.0.0.1:9/t.png"> ![x](http://127.0.0.1:9/m.png) [link](http://a.b)')
    assert "<img" not in shown and "![" not in shown and "&lt;img" in shown and "[link](http://a.b)" in shown


def test_output_paths_cannot_be_guessed(system, tmp_path):
    from avatar.server import SessionFolders

    folders = SessionFolders(tmp_path)
    a, b = folders.folder("abc"), SessionFolders(tmp_path).folder("abc")
    assert a != b and len(a.name) == 32 and "abc" not in str(a)  # keyed by a secret made at start-up
    name = system.new_output_path(".mp4", tmp_path).name
    assert len(name.split("-")[-1].split(".")[0]) == 32


def test_outputs_stay_under_the_size_cap_over_100_renders(system, astronaut, speech_wav, tmp_path):
    """Every 20 new outputs the folder is cleaned: files over the TTL go, then the oldest beyond the size cap."""
    import dataclasses

    from avatar.core.config import ServerConfig

    clip = media.load_audio(speech_wav, 16000)
    clip = Audio(clip.samples[:8000].copy(), 16000)  # 0.5 s: 100 renders in about a minute
    saved = system.config
    system.config = dataclasses.replace(saved, server=ServerConfig(max_output_mb=0.5))
    system.cleanup_outputs()  # what earlier tests left in the shared folder is not this test's business
    sizes, largest = [], 0
    try:
        for _ in range(100):
            out = system.render(astronaut, clip, "neutral", "still", None, 256, out_path=system.new_output_path(".mp4"))
            largest = max(largest, out.stat().st_size)
            sizes.append(sum(p.stat().st_size for p in system.output_dir.rglob("*") if p.is_file()))
    finally:
        system.config = saved
    print(f"output folder over 100 renders: at most {max(sizes) / 1e6:.2f} MB (cap 0.5 MB + 20 renders of "
          f"{largest / 1e3:.0f} kB between cleanups)")
    assert max(sizes) <= 0.5e6 + 21 * largest


# ---------------------------------------------------------------- logs
def test_refusals_log_one_line_and_faults_a_reference(caplog):
    import gradio as gr

    import app as app_module

    @app_module.user_errors
    def refuses():
        raise BadImage("no face found in the photo")

    @app_module.user_errors
    def breaks():
        raise ValueError("cv2.error: /tmp/opencv/src/resize.cpp:4152 internal")

    caplog.set_level(logging.INFO)
    with pytest.raises(gr.Error) as refused:
        refuses()
    assert str(refused.value.message) == "no face found in the photo"
    assert not any(r.exc_info for r in caplog.records)
    with pytest.raises(gr.Error) as fault:
        breaks()
    message = str(fault.value.message)
    assert "reference" in message and "cv2" not in message and "/tmp" not in message
    ref = message.split("reference ")[1].split(")")[0]
    assert any(r.exc_info and ref in r.getMessage() for r in caplog.records)
    json.dumps(message)


# ---------------------------------------------------------------- engines guard their own numbers
def test_the_lite_engine_refuses_nan_intensity_and_pose_itself(astronaut):
    """The system checks intensity at its entry; the engine checks again, so no other caller can feed NaN into the
    warp (a native crash before)."""
    import dataclasses

    from avatar.core.validate import BadValue
    from avatar.head.lite import LiteEngine
    from avatar.head.poses import load_pose

    engine = LiteEngine(size=256)
    face = engine.prepare(astronaut)
    speech = Audio(np.zeros(8000, np.float32), 16000)
    pose = load_pose("still", 13)
    with pytest.raises(BadValue, match="intensity"):
        engine.plan(face, speech, "happy", pose, float("nan"))
    angles = pose.angles_deg.copy()
    angles[3, 0] = np.nan
    bad = dataclasses.replace(pose, angles_deg=angles)
    with pytest.raises(BadValue, match="pose"):
        engine.plan(face, speech, "happy", bad, 0.5)
