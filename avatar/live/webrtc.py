"""The hands-free transport: WebRTC with aiortc on the app's own FastAPI server (fastrtc needs Gradio < 6).

The browser sends one offer (its microphone, echo-cancelled, plus receive-only audio and video); the answer carries
two tracks that pace themselves (20 ms of sound, one frame every 40 ms) from the session's Playout, sending silence
and the resting face between replies, so one connection serves the whole conversation. The microphone's frames go,
resampled to 16 kHz, to the session's VAD."""
from __future__ import annotations

import asyncio
import fractions
import json
import logging
import time
import uuid
from typing import Callable

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request

from avatar.core.config import LiveConfig
from avatar.core.errors import AvatarError
from avatar.core.types import FPS
from avatar.live.playout import OUT_RATE
from avatar.live.session import LiveOptions, LiveSession
from avatar.live.vad import SAMPLE_RATE

log = logging.getLogger("avatar.live")
AUDIO_FRAME = OUT_RATE // 50  # 20 ms
VIDEO_CLOCK = 90000
MAX_SESSIONS = 8  # each holds a connection that encodes 25 fps even while idle
REST_SIZE = 256  # the grey square shown before the first reply


def _tracks():
    """aiortc is imported when a conversation starts, not when the app starts."""
    from aiortc import MediaStreamTrack

    class PacedTrack(MediaStreamTrack):
        def __init__(self, playout, period_s: float) -> None:
            super().__init__()
            self.playout, self.period_s = playout, period_s
            self._start: float | None = None
            self._count = 0

        async def _tick(self) -> int:
            if self._start is None:
                self._start = time.perf_counter()
            else:
                self._count += 1
                await asyncio.sleep(max(0.0, self._start + self._count * self.period_s - time.perf_counter()))
            return self._count

    class AudioOut(PacedTrack):
        kind = "audio"

        async def recv(self):
            from av import AudioFrame

            n = await self._tick()
            pcm = (np.clip(self.playout.next_audio(AUDIO_FRAME), -1, 1) * 32767).astype(np.int16)
            frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = OUT_RATE, n * AUDIO_FRAME, fractions.Fraction(1, OUT_RATE)
            return frame

    class VideoOut(PacedTrack):
        kind = "video"

        async def recv(self):
            from av import VideoFrame

            n = await self._tick()
            image = self.playout.frame()
            if image is None:
                image = np.full((REST_SIZE, REST_SIZE, 3), 48, np.uint8)
            frame = VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = n * (VIDEO_CLOCK // FPS), fractions.Fraction(1, VIDEO_CLOCK)
            return frame

    return AudioOut, VideoOut


async def _read_microphone(track, session: LiveSession) -> None:
    """Every microphone frame, as 16 kHz float mono, to the session's VAD, until the track ends."""
    from aiortc.mediastreams import MediaStreamError
    from av import AudioResampler

    resampler = AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        for out in resampler.resample(frame):
            session.feed_mic(out.to_ndarray().reshape(-1).astype(np.float32))


def _send(channel, event: dict) -> None:
    if channel.readyState == "open":
        channel.send(json.dumps(event, ensure_ascii=False))


def _limit_ice(host: str) -> None:
    """Offer only this address (e.g. 127.0.0.1 when the browser runs on the server's machine)."""
    if host:
        import aioice.ice

        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [host]


class LiveHub:
    """Every browser's hands-free conversation, by id."""

    def __init__(self, system, config: LiveConfig) -> None:
        self.system, self.config = system, config
        self.sessions: dict[str, tuple[LiveSession, object]] = {}

    async def offer(self, sdp: str, kind: str) -> dict:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        _limit_ice(self.config.ice_host)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        session_id, session = uuid.uuid4().hex, LiveSession(self.system, self.config)
        self.sessions[session_id] = (session, pc)
        audio_out, video_out = _tracks()
        loop = asyncio.get_running_loop()
        pc.on("datachannel", lambda channel: session.listeners.append(
            lambda event: loop.call_soon_threadsafe(_send, channel, event)))
        pc.on("track", lambda track: track.kind == "audio" and asyncio.ensure_future(
            _read_microphone(track, session)))
        pc.on("connectionstatechange", lambda: pc.connectionState in ("failed", "closed") and asyncio.ensure_future(
            self.close(session_id)))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        pc.addTrack(audio_out(session.playout, AUDIO_FRAME / OUT_RATE))  # joins the browser's transceivers
        pc.addTrack(video_out(session.playout, 1 / FPS))
        await pc.setLocalDescription(await pc.createAnswer())  # aiortc gathers every candidate here (no trickle)
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "id": session_id}

    def session(self, session_id: str) -> LiveSession | None:
        entry = self.sessions.get(session_id)
        return entry[0] if entry else None

    def configure(self, session_id: str, options: LiveOptions, conversation=None) -> bool:
        """The Talk tab's settings; conversation: the browser session's history, which the spoken turns continue."""
        session = self.session(session_id)
        if session is not None:
            session.options = options
            session.conversation = conversation if conversation is not None else session.conversation
        return session is not None

    async def close(self, session_id: str) -> None:
        entry = self.sessions.pop(session_id, None)
        if entry is not None:
            entry[0].close()
            await entry[1].close()

    async def close_all(self) -> None:
        for session_id in list(self.sessions):
            await self.close(session_id)


def routes(hub: LiveHub, allowed: Callable[[Request], bool] = lambda request: True):
    """The page's endpoints: /live/offer (SDP in, SDP answer and the session id out), /live/{id}/state (history and
    events since a count), /live/{id}/close. allowed(request): the app's login check; without it a stranger who
    reaches the server could run the models (an offer starts a conversation) and read a conversation by its id."""

    def logged_in(request: Request) -> None:
        if not allowed(request):
            raise HTTPException(401, "log in first")

    router = APIRouter(dependencies=[Depends(logged_in)])

    @router.post("/live/offer")
    async def offer(request: Request):
        body = await request.json()
        if len(hub.sessions) >= MAX_SESSIONS:
            raise HTTPException(503, "too many hands-free conversations are running; try again later")
        try:
            return await hub.offer(body["sdp"], body["type"])
        except AvatarError as e:  # e.g. no chat model loaded
            raise HTTPException(503, str(e)) from None

    @router.get("/live/{session_id}/state")
    async def state(session_id: str, since: int = 0):
        session = hub.session(session_id)
        if session is None:
            raise HTTPException(404, "no such conversation (it ended or the server restarted)")
        return session.state(since)

    @router.post("/live/{session_id}/close")
    async def close(session_id: str):
        await hub.close(session_id)
        return {"ok": True}

    return router
