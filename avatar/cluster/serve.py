"""Ray Serve: the render and speech workers as deployments, and the handles AvatarSystem uses in their place.

    stages = start(cfg)          # ray.init (or join cfg.cluster.address), deploy, return the handles
    stages.render.render(job, out_path)  # same clip as local mode; frames of concurrent sessions share GPU batches

A render replica takes up to `max_ongoing_requests` clips at once; each clip runs render_clip in a thread, and the
enhancement of its frame batches goes through one `@serve.batch` method, so frames from every session that replica
serves go through GFPGAN together. Cancelling a request (Stop, a new turn) stops its clip between two frame batches
and frees its place in the batches.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from avatar.core.config import AvatarConfig, from_dict, to_dict
from avatar.core.errors import AvatarError, BackendUnavailable, Cancelled
from avatar.core.paths import PROJECT_ROOT
from avatar.core.cancel import stoppable
from avatar.core.types import Audio, ProgressFn

from .jobs import RemoteFace, RenderJob, photo_key
from .worker import RenderCancelled, RenderWorker, SpeechWorker

log = logging.getLogger("avatar.cluster")

RENDER_APP, SPEECH_APP = "avatar-render", "avatar-speech"
CLIPS_PER_REPLICA = 16  # clips a render replica works on at once (their frames share batches)


# ---------------------------------------------------------------- replicas
def _batch_decorator():
    """serve.batch when Ray is importable (inside replicas it always is); the method unbatched otherwise, so this
    module imports without Ray for the docs and the layout test."""
    try:
        from ray import serve
    except ImportError:  # pragma: no cover - ray is in requirements.txt
        return lambda fn: fn
    return serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)



class RenderReplica:
    """One render worker in a Ray actor; batches the enhancement of all the clips it is rendering."""

    def __init__(self, cfg_dict: dict) -> None:
        cfg = from_dict(cfg_dict)
        self.worker = RenderWorker(cfg)
        self._enhance.set_max_batch_size(max(1, cfg.cluster.max_batch_size))
        self._enhance.set_batch_wait_timeout_s(max(0.0, cfg.cluster.batch_wait_ms) / 1000)
        self.batches: list[tuple[int, int]] = []  # (clips, frames) of each enhancement call, for the benchmark
        self.active = 0  # clips being rendered now
        self._count_lock = threading.Lock()
        self.pid = os.getpid()

    def status(self) -> dict:
        return {"stages": self.worker.status(), "pid": self.pid, "load_s": self.worker.load_s,
                "batches": list(self.batches[-1000:]), "active": self.active}

    def prepare(self, image: np.ndarray) -> tuple[str, ...]:
        return self.worker.prepare(image)

    def matte(self, image: np.ndarray, colour) -> np.ndarray:
        return self.worker.matte(image, colour)

    def enhance_image(self, image: np.ndarray) -> np.ndarray:
        return self.worker.enhance_image(image)

    async def enhance_video(self, data: bytes, suffix: str, max_s: float | None):
        """A video file's bytes -> yields ("progress", (fraction, text)) events, then ("mp4", bytes) of the enhanced
        video: decoded, enhanced and encoded here, in a thread that a cancelled request stops at its next batch."""
        def enhance(folder: Path, progress: ProgressFn, cancelled: threading.Event) -> Path:
            source = folder / f"in{suffix}"
            source.write_bytes(data)
            report = stoppable(progress, cancelled, lambda: RenderCancelled("the video was cancelled"))
            return self.worker.enhance_video(source, folder / "out.mp4", max_s, report)

        async for event in _file_events("avatar-video-", enhance):
            yield event

    async def render(self, job: RenderJob):
        """Yields ("progress", (fraction, text)) events, then ("mp4", bytes) of the finished clip."""
        loop = asyncio.get_running_loop()

        def enhance(frames: np.ndarray) -> np.ndarray:  # called from the clip's thread
            return asyncio.run_coroutine_threadsafe(self._enhance(frames), loop).result()

        def render(folder: Path, progress: ProgressFn, cancelled: threading.Event) -> Path:
            with self._rendering():  # counted while the clip's thread runs, also after a cancel
                return self.worker.render_to_file(job, folder / "clip.mp4", enhance, progress, cancelled)

        async for event in _file_events("avatar-clip-", render):
            yield event

    @contextlib.contextmanager
    def _rendering(self):
        with self._count_lock:
            self.active += 1
        try:
            yield
        finally:
            with self._count_lock:
                self.active -= 1

    @_batch_decorator()
    async def _enhance(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """Frame batches of several clips -> one enhancement call per frame size."""
        self.batches.append((len(batches), sum(len(b) for b in batches)))
        return await asyncio.to_thread(_enhance_grouped, self.worker.enhance_frames, batches)


def _enhance_grouped(enhance: Callable[[np.ndarray], np.ndarray], batches: list[np.ndarray]) -> list[np.ndarray]:
    out: list[Any] = [None] * len(batches)
    for shape in {b.shape[1:] for b in batches}:
        members = [i for i, b in enumerate(batches) if b.shape[1:] == shape]
        result = enhance(np.concatenate([batches[i] for i in members]))
        for i, part in zip(members, np.split(result, np.cumsum([len(batches[i]) for i in members])[:-1])):
            out[i] = part
    return out


async def _file_events(prefix: str, make: Callable[[Path, ProgressFn, threading.Event], Path]):
    """Runs make(folder, progress, cancelled) in a thread; yields ("progress", (fraction, text)) as it reports, then
    ("mp4", the bytes of the file it returns). Cancelling the request sets `cancelled` (the work stops at its next
    check) and the temporary folder goes when the thread ends."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    cancelled = threading.Event()
    folder = Path(tempfile.mkdtemp(prefix=prefix))

    def progress(fraction: float | None, text: str) -> None:
        loop.call_soon_threadsafe(events.put_nowait, (fraction, text))

    task = asyncio.ensure_future(asyncio.to_thread(make, folder, progress, cancelled))
    getter: asyncio.Future | None = None
    try:
        while not task.done():
            getter = asyncio.ensure_future(events.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield ("progress", getter.result())
            else:
                getter.cancel()  # an item it was woken for stays in the queue
        while not events.empty():  # reported just before the thread ended
            yield ("progress", events.get_nowait())
        path = await task
        yield ("mp4", await asyncio.to_thread(path.read_bytes))  # the loop also serves other clips' batches
    finally:  # also on cancellation: the thread stops at its next check, then its folder goes (in a thread)
        cancelled.set()
        if getter is not None:
            getter.cancel()
        task.add_done_callback(lambda _t: threading.Thread(target=shutil.rmtree, args=(folder, True)).start())


class SpeechReplica:
    """ASR and TTS in a Ray actor (no batching: both are fast and run one request at a time)."""

    def __init__(self, cfg_dict: dict) -> None:
        self.worker = SpeechWorker(from_dict(cfg_dict))

    def status(self) -> dict:
        return {"stages": self.worker.status(), "pid": os.getpid(), "voices": self.worker.voices(),
                "sample_rate": self.worker.sample_rate()}

    def transcribe(self, audio: Audio, language: str):
        return self.worker.transcribe(audio, language)

    def synthesize(self, text: str, language: str, voice: str | None, speed: float | None = None) -> Audio:
        return self.worker.synthesize(text, language, voice, speed)


# ---------------------------------------------------------------- handles used by AvatarSystem
class RemoteRender:
    """The render deployment behind AvatarSystem.render / prepare_photo / matte / enhance."""

    backend = "ray"

    def __init__(self, handle, status: dict) -> None:
        self.handle, self.info = handle, status
        self.size = None

    def prepare(self, image: np.ndarray) -> RemoteFace:
        warnings = _result(self.handle.prepare.remote(image))
        return RemoteFace(image, photo_key(image), tuple(warnings))

    def render(self, job: RenderJob, out_path: Path, progress: ProgressFn | None = None, cancel=None) -> Path:
        """Runs the clip on a replica and writes its MP4 to out_path; `cancel` (anything with is_set()) stops it."""
        stream = self.handle.options(stream=True).render.remote(job)
        return _received_mp4(stream, Path(out_path), progress, cancel, "the render worker ended without a clip")

    def matte(self, image: np.ndarray, colour) -> np.ndarray:
        return np.array(_result(self.handle.matte.remote(image, colour)))  # Ray returns read-only arrays

    def enhance_image(self, image: np.ndarray) -> np.ndarray:
        return np.array(_result(self.handle.enhance_image.remote(image)))

    def enhance_video(self, source: str | Path, out_path: str | Path, max_s: float | None = None,
                      progress: ProgressFn | None = None) -> Path:
        """A video file -> the enhanced MP4 at out_path; the file travels to a replica and the result back."""
        source = Path(source)
        suffix = source.suffix if source.suffix[1:].isalnum() and len(source.suffix) <= 8 else ".video"
        stream = self.handle.options(stream=True).enhance_video.remote(source.read_bytes(), suffix.lower(), max_s)
        return _received_mp4(stream, Path(out_path), progress, None, "the render worker ended without a video")

    def status(self) -> dict:
        return _result(self.handle.status.remote())


class RemoteAsr:
    backend_prefix = "ray:"

    def __init__(self, handle, status: dict) -> None:
        st = status["stages"]["asr"]
        self.handle, self.backend, self.device = handle, f"ray/{st['backend']}", st["device"]
        self.fallback_reason, self.load_s = st["note"] or None, st["load_s"]

    def transcribe(self, audio: Audio, language: str = "auto", cancel=None):
        """cancel: checked before the remote call (a remote transcription is not interrupted once sent)."""
        if cancel is not None:
            cancel.check()
        return _result(self.handle.transcribe.remote(audio, language))


class RemoteTts:
    def __init__(self, handle, status: dict) -> None:
        st = status["stages"]["tts"]
        self.handle, self.backend, self.device = handle, f"ray/{st['backend']}", st["device"]
        self.fallback_reason, self.load_s = st["note"] or None, st["load_s"]
        self._voices, self.sample_rate = status["voices"], status["sample_rate"]

    def voices(self) -> list[str]:
        return list(self._voices)

    def synthesize(self, text: str, language: str = "auto", voice: str | None = None,
                   speed: float | None = None) -> Audio:
        return _result(self.handle.synthesize.remote(text, language, voice, speed))


@dataclass
class RemoteStages:
    render: RemoteRender
    asr: RemoteAsr
    tts: RemoteTts
    started_s: float = 0.0
    notes: dict = field(default_factory=dict)


# ---------------------------------------------------------------- start-up
def start(cfg: AvatarConfig) -> RemoteStages:
    """Connects to Ray (or starts it here) and deploys the workers; returns their handles."""
    t0 = time.perf_counter()
    serve = _connect(cfg)
    c = cfg.cluster
    render = _deploy(serve, RenderReplica, RENDER_APP, cfg, c.render_replicas, c.render_num_cpus, c.render_num_gpus,
                     CLIPS_PER_REPLICA)
    speech = _deploy(serve, SpeechReplica, SPEECH_APP, cfg, c.speech_replicas, c.speech_num_cpus,
                     c.speech_num_gpus, 4)
    render_status, speech_status = _result(render.status.remote()), _result(speech.status.remote())
    stages = RemoteStages(RemoteRender(render, render_status), RemoteAsr(speech, speech_status),
                          RemoteTts(speech, speech_status), time.perf_counter() - t0,
                          {"render": render_status["stages"], "speech": speech_status["stages"]})
    log.info("cluster: Ray Serve deployments ready in %.1f s", stages.started_s)
    return stages


def _connect(cfg: AvatarConfig):
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no calls home
    try:
        import ray
        from ray import serve
    except ImportError as e:
        raise BackendUnavailable(f"cluster mode 'ray' needs Ray Serve (pip install 'ray[serve]'): {e}") from None
    if not ray.is_initialized():
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                                        os.environ.get("PYTHONPATH")])),
                            "RAY_USAGE_STATS_ENABLED": "0"}}
        c = cfg.cluster
        # "local" starts a private instance even when `ray start` runs on this machine (joined only when asked)
        kwargs: dict = {"address": c.address} if c.address else {"address": "local", "num_cpus": c.num_cpus or None,
                                                                  "include_dashboard": False}
        ray.init(runtime_env=env, log_to_driver=False, **kwargs)
    serve.start(proxy_location="Disabled")  # handles only: no HTTP proxy actor on port 8000
    return serve


def _deploy(serve, cls, name: str, cfg: AvatarConfig, replicas: int, num_cpus: float, num_gpus: float,
            ongoing: int):
    deployment = serve.deployment(cls, name=name, num_replicas=max(1, replicas), max_ongoing_requests=ongoing,
                                  health_check_period_s=2.0,  # a dead replica is replaced in ~3 s, not ~6
                                  ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus})
    serve._run(deployment.bind(to_dict(cfg)), name=name, route_prefix=None, _blocking=False)
    _wait_running(serve, name, replicas, num_cpus, num_gpus, cfg.cluster.deploy_timeout_s)
    return serve.get_app_handle(name)


def _wait_running(serve, name: str, replicas: int, num_cpus: float, num_gpus: float, timeout_s: float) -> None:
    """serve.run waits forever when the replicas do not fit the cluster's CPUs/GPUs; this says so instead."""
    import ray

    deadline = time.monotonic() + timeout_s
    while (status := serve.status().applications[name].status.value) != "RUNNING":
        if status == "DEPLOY_FAILED":
            raise BackendUnavailable(f"cluster: the {name} workers failed to start: "
                                     f"{serve.status().applications[name].message}")
        if time.monotonic() > deadline:
            serve.delete(name)
            raise BackendUnavailable(
                f"cluster: {max(1, replicas)} {name} worker(s) of {num_cpus:g} CPU and {num_gpus:g} GPU each did not "
                f"fit in {timeout_s:.0f} s; free now: {ray.available_resources()} (lower the replicas, CPUs or "
                f"GPUs per worker in [cluster], or add machines)")
        time.sleep(0.2)


def shutdown() -> None:
    """Removes the deployments and stops a Ray instance this process started (tests, the benchmark)."""
    import ray
    from ray import serve

    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()


# ---------------------------------------------------------------- helpers
def _result(response):
    """A DeploymentResponse's value; a domain error raised in the replica comes back as itself."""
    try:
        return response.result()
    except Exception as e:  # noqa: BLE001 - Ray wraps the replica's exception
        raise _domain_error(e) from None


def _unwrapped(stream):
    try:
        yield from stream
    except Exception as e:  # noqa: BLE001
        raise _domain_error(e) from None


def _domain_error(e: Exception) -> Exception:
    cause = getattr(e, "cause", None) or e.__cause__
    if isinstance(cause, AvatarError):
        return cause
    if isinstance(e, AvatarError):
        return e
    if type(e).__name__ in ("RequestCancelledError", "TaskCancelledError"):
        return RenderCancelled("the clip was cancelled")
    log.error("cluster: a worker failed: %s", e)
    return BackendUnavailable(f"a cluster worker failed ({type(e).__name__}); try again")


def _received_mp4(stream, out_path: Path, progress: ProgressFn | None, cancel, missing: str) -> Path:
    """Reads a replica's ("progress", (fraction, text)) ... ("mp4", bytes) stream into out_path; cancel (anything
    with is_set()) or an error cancels the remote work."""
    try:
        for kind, value in _unwrapped(stream):
            if cancel is not None and cancel.is_set():
                raise Cancelled("the clip was stopped")  # the session's own token: Stop, a new turn
            if kind == "progress" and progress is not None:
                progress(*value)
            elif kind == "mp4":
                out_path.parent.mkdir(parents=True, exist_ok=True)
                _write_atomically(out_path, value)
                return out_path
    except BaseException:
        stream.cancel()
        raise
    raise AvatarError(missing)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    tmp.replace(path)
