"""Ray mode on a real local Ray instance (2 CPUs, no dashboard) with the embedded stages as Serve deployments:
concurrent sessions, frame-for-frame equality with local mode, a video file enhanced on a replica, a killed
replica, a cancelled clip."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from avatar.core import media
from avatar.core.config import AvatarConfig
from avatar.core.types import Audio

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

SESSIONS = 4
@pytest.fixture(scope="module")
def ray_system(tmp_path_factory, gfpgan_weights):
    from avatar.cluster.serve import shutdown
    from avatar.system import AvatarSystem

    cfg = AvatarConfig(weights_dir=str(gfpgan_weights), device="cpu",  # the other stages: their defaults
                       output_dir=str(tmp_path_factory.mktemp("ray-out"))).replace(**{
                           "cluster.mode": "ray", "cluster.num_cpus": 2, "cluster.render_num_cpus": 1.0,
                           "cluster.speech_num_cpus": 0.5, "chat.max_new_tokens": 24})
    system = AvatarSystem.load(cfg)
    yield system
    shutdown()


def _frames(path: Path) -> np.ndarray:
    return np.concatenate(list(media.read_video(path, batch=64)))


def test_stages_run_as_deployments(ray_system):
    assert ray_system.status["head"].backend == "ray/lite" and ray_system.status["asr"].backend == "ray/whisper"
    assert ray_system.status["chat"].backend == "smollm2"  # the chat model stays in this process
    assert ray_system.remote.status()["pid"] != os.getpid()


def test_concurrent_sessions_turns_and_renders_match_local_mode(ray_system, system, astronaut, jfk_path, tmp_path):
    """4 sessions at once: each a spoken turn and a render; every render is the local mode's video, frame for frame."""
    speech = media.load_audio(jfk_path, 44100)
    clips = [Audio(speech.samples[i * 44100: (i + 3) * 44100].copy(), 44100) for i in range(SESSIONS)]
    question = ray_system.speak("What is your favorite color?", "en")
    results, errors = {}, []

    def session(k: int) -> None:
        try:
            conv = ray_system.new_conversation()
            events = list(ray_system.respond(conv, photo=astronaut, audio=question, emotion="happy",
                                             chunk_dir=tmp_path / f"s{k}"))
            remote = ray_system.render(astronaut, clips[k], "happy", "talking", "#2f6f4f", 256,
                                       out_path=tmp_path / f"ray{k}.mp4")
            results[k] = (events, remote, len(conv))
        except Exception as e:  # noqa: BLE001 - reported below with the session number
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=session, args=(k,)) for k in range(SESSIONS)]
    [t.start() for t in threads]
    [t.join(timeout=600) for t in threads]
    assert not errors, errors
    for k, (events, remote, rounds) in sorted(results.items()):
        kinds = [e.kind for e in events]
        assert kinds[0] == "transcript" and "color" in events[0].text.lower() and "chunk" in kinds, kinds
        assert all(e.path.is_file() for e in events if e.kind == "chunk") and rounds == 1
        local = system.render(astronaut, clips[k], "happy", "talking", "#2f6f4f", 256, out_path=tmp_path / f"loc{k}.mp4")
        a, b = _frames(remote), _frames(local)
        assert a.shape == b.shape and np.array_equal(a, b), f"session {k}: ray and local videos differ"
    print(f"{SESSIONS} sessions: turns and renders done; videos identical to local mode")


def test_a_video_file_is_enhanced_on_a_replica_as_in_local_mode(ray_system, astronaut, tmp_path):
    """The Enhance tab's video input in ray mode: the file goes to the render replica, which enhances it as local
    mode does (GFPGAN with the seeded weights), and the MP4 comes back."""
    from avatar.enhance import Enhancer

    src = media.write_video(tmp_path / "in.mp4", [np.stack([astronaut, np.roll(astronaut, 8, axis=1)])])
    reports = []
    remote = ray_system.enhance(src, tmp_path / "ray.mp4", progress=lambda *r: reports.append(r))
    assert reports and reports[-1] == (0.99, "enhanced 2/2 frames"), reports  # the replica's progress came back
    local = Enhancer.load(ray_system.config).enhance_video(src, tmp_path / "local.mp4")
    a, b, original = _frames(remote), _frames(local), _frames(src)
    assert a.shape == b.shape == original.shape == (2, 512, 512, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 0.5  # one network, one codec; float sums may round apart
    assert np.abs(a.astype(int) - original.astype(int))[:, 95:160, 200:260].mean() > 1  # the face was enhanced


def test_a_killed_replica_is_restarted_and_the_next_request_succeeds(ray_system, astronaut, jfk_path, tmp_path):
    pid = ray_system.remote.status()["pid"]
    os.kill(pid, 9)
    speech = media.load_audio(jfk_path, 44100)
    clip = Audio(speech.samples[: 2 * 44100].copy(), 44100)
    t0, out, last = time.perf_counter(), None, None
    while out is None and time.perf_counter() - t0 < 120:  # Serve notices the dead actor, then starts a new one
        try:
            out = ray_system.render(astronaut, clip, "neutral", "still", None, 256, out_path=tmp_path / "after.mp4")
        except Exception as e:  # noqa: BLE001 - requests routed to the dead replica fail until it is replaced
            last = e
            time.sleep(1)
    assert out is not None, f"no render after the replica was killed: {last!r}"
    assert ray_system.remote.status()["pid"] != pid
    print(f"replica restarted; next render after {time.perf_counter() - t0:.1f} s")


def test_cancelling_a_clip_frees_its_place(ray_system, astronaut, jfk_path, tmp_path):
    from avatar.core.errors import Cancelled

    speech = media.load_audio(jfk_path, 44100)
    long_clip = Audio(np.tile(speech.samples, 3), 44100)  # 33 s: still running when cancelled
    cancel, seen = threading.Event(), []

    def progress(fraction: float, _text: str) -> None:
        seen.append(fraction)
        cancel.set()

    with pytest.raises(Cancelled, match="stopped"):  # the session's Stop, not a lost replica
        ray_system.render(astronaut, long_clip, "neutral", "talking", None, 256, out_path=tmp_path / "cut.mp4",
                          progress=progress, cancel=cancel)
    assert seen and seen[-1] < 1.0 and not (tmp_path / "cut.mp4").exists()
    t0 = time.perf_counter()
    while ray_system.remote.status()["active"] and time.perf_counter() - t0 < 30:
        time.sleep(0.1)
    freed_s = time.perf_counter() - t0
    assert ray_system.remote.status()["active"] == 0, "the cancelled clip is still rendering"
    short = Audio(speech.samples[: 44100].copy(), 44100)
    assert ray_system.render(astronaut, short, "neutral", "still", None, 256, out_path=tmp_path / "next.mp4").is_file()
    print(f"cancelled clip left the worker {freed_s * 1000:.0f} ms after the cancel returned")


def test_workers_that_do_not_fit_fail_with_a_note_instead_of_hanging(ray_system):
    """serve.run waits forever for replicas the cluster cannot place; start-up now gives up with a sentence."""
    from ray import serve

    from avatar.cluster.serve import SpeechReplica, _deploy
    from avatar.core.errors import BackendUnavailable

    cfg = ray_system.config.replace(**{"cluster.deploy_timeout_s": 3.0})
    with pytest.raises(BackendUnavailable, match="did not fit"):
        _deploy(serve, SpeechReplica, "avatar-too-big", cfg, 1, 64.0, 0.0, 1)
    assert "avatar-too-big" not in serve.status().applications  # nothing left waiting for CPUs
