"""The Gradio web app: UI only. Widgets and events call AvatarSystem; domain errors become gr.Error.

    python app.py [--config avatar.toml] [--host 127.0.0.1] [--port 7860] [--share] [--auth user:pass]
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import logging
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import gradio as gr

from avatar.core import media
from avatar.core.cancel import CancelToken
from avatar.core.config import AvatarConfig
from avatar.core.errors import AvatarError, Cancelled
from avatar.core.types import EMOTIONS
from avatar.live.session import LiveOptions
from avatar.live.webrtc import LiveHub, routes
from avatar.server import JobCap, LoginGuard, SessionFolders, UploadLimiter, chat_text, load_credentials
from avatar.system import AvatarSystem
from avatar.tts import SPEED_RANGE
from avatar.turn.background import run_cancellable
from avatar.turn.running import RunningTurns

log = logging.getLogger("avatar.app")

EMOTION_LABELS = {"angry": "生气 angry", "contempt": "轻蔑 contempt", "disgusted": "厌恶 disgusted",
                  "fear": "害怕 fear", "happy": "开心 happy", "neutral": "平静 neutral", "sad": "难过 sad",
                  "surprised": "惊讶 surprised"}
LANGUAGE_CHOICES = [("自动 auto", "auto"), ("中文 zh", "zh"), ("English en", "en")]
SIZE_CHOICES = [("256 px", 256), ("512 px", 512)]
# chat text and transcription: short work that must not wait behind other users' renders (the chat model and Whisper
# take their own locks), in a group of its own
LIGHT = {"concurrency_id": "light", "concurrency_limit": 2}
HEARTBEAT_S = 0.5  # a turn's generator returns at least this often, so a cancelled /talk is closed in time
# The idle loop and the reply player share one place (one cell of a grid made of their parent, whatever Gradio's
# wrapper is): the idle loop shows whenever the reply player is not playing (before the first turn, from Send until
# the first sentence plays, after the reply), the reply player while it plays. TALK_JS marks the page "talk-speaking"
# from the player's own media events; the hidden player keeps playing (visibility, not display). The whole reply's
# player shows only once there is one (an empty player would push the inputs down on a phone).
TALK_CSS = """
:has(> #talk-idle) { display: grid !important; }
#talk-idle, #talk-video { grid-area: 1 / 1; min-width: 0; }
#talk-idle { visibility: hidden; }
body:not(.talk-speaking) #talk-screen:has(#talk-idle video) #talk-idle { visibility: visible; }
body:not(.talk-speaking) #talk-screen:has(#talk-idle video) #talk-video { visibility: hidden; }
#talk-full:not(:has(video)) { display: none !important; }
"""
TALK_JS = """() => {
  const inPlayer = e => e.target instanceof HTMLMediaElement && e.target.closest('#talk-video');
  const mark = on => e => { if (inPlayer(e)) document.body.classList.toggle('talk-speaking', on); };
  document.addEventListener('playing', mark(true), true);  /* media events do not bubble: caught while capturing */
  for (const name of ['pause', 'ended', 'emptied']) document.addEventListener(name, mark(false), true);
}"""
PHONE_MAX_PX = 700  # narrower than this: the Talk tab's settings start folded
FOLD_ON_PHONE = f"() => ({{__type__: 'update', open: window.innerWidth >= {PHONE_MAX_PX}}})"
UNEXPECTED = "something went wrong on the server (reference {ref}); the details are in its log"


@dataclass
class Session:
    """Everything one browser session owns: its conversation and its output folder. Never shared."""

    conversation: object
    folder: Path
    turns: int = 0
    timings: dict = field(default_factory=dict)  # the last turn's, for the System tab


class Photo(gr.Image):
    """An image input (made with type="filepath", so the app decodes it, with its pixel cap before decoding): an
    upload Gradio cannot take as an image is refused with a sentence."""

    def get_block_name(self) -> str:  # the browser draws Gradio's own image component
        return "image"

    def get_block_class(self) -> str:
        return "image"

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except Exception:  # noqa: BLE001 - Gradio's own message says nothing a user can act on
            name = getattr(payload, "orig_name", None) or (payload or {}).get("orig_name", "the file") \
                if isinstance(payload, dict) else getattr(payload, "orig_name", None) or "the file"
            raise gr.Error(f"{name} is not an image we can read (use PNG or JPEG)") from None


class Choice(gr.Radio):
    """A radio whose refusal of an unknown value (from API clients) is a sentence, not Gradio's
    "Value: 'x' (type: <class 'str'>) is not in the list of choices"."""

    def get_block_name(self) -> str:  # the browser draws Gradio's own radio component
        return "radio"

    def get_block_class(self) -> str:
        return "radio"

    def preprocess(self, payload):
        allowed = [v for _, v in self.choices]
        if payload is not None and payload not in allowed:
            shown = "".join(c if c.isprintable() else "?" for c in str(payload))[:40]
            raise gr.Error(f"{shown!r} is not a choice for {self.label or 'this setting'}; use one of: "
                           f"{', '.join(map(str, allowed))}")
        return super().preprocess(payload)


class IntRadio(Choice):
    """Int choices that API clients see as an int (Gradio's Radio advertises Literal['256', '512'] for int choices,
    then refuses the strings) and may also send as text."""

    def api_info(self) -> dict:
        return {"type": "integer", "title": self.label or "value",
                "description": " or ".join(str(v) for _, v in self.choices)}

    def preprocess(self, payload):
        if isinstance(payload, str) and payload.strip().isdigit():
            payload = int(payload.strip())
        return super().preprocess(payload)


def _session_key(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


def user_errors(fn):
    """Domain errors become gr.Error (the sentence a user understands) and one log line; anything else is a fault:
    its traceback goes to the log under a reference the user is shown, never its text (paths, library internals)."""
    def refuse(e: Exception):
        if isinstance(e, gr.Error):
            return e
        if isinstance(e, AvatarError):
            log.info("refused %s: %s", fn.__name__, e)
            return gr.Error(str(e))
        ref = uuid.uuid4().hex[:8]
        log.exception("fault in %s (reference %s)", fn.__name__, ref)
        return gr.Error(UNEXPECTED.format(ref=ref))

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - turned into a sentence, details logged
                raise refuse(e) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - turned into a sentence, details logged
            raise refuse(e) from None

    return wrapper


class AvatarApp:
    def __init__(self, system: AvatarSystem) -> None:
        self.system = system
        self.poses = self._pose_names()
        self.folders = SessionFolders(system.output_dir)
        self.turns = RunningTurns()  # each session's running turn, for Stop / Clear / a new turn
        # each session's running render / video enhancement, for their Stop buttons (a turn's handle, of which a job
        # uses the token and the end: start() stops one still running under the same key, stop() waits for the end)
        self.jobs = RunningTurns()
        self.live = LiveHub(system, system.config.live)  # hands-free conversations (WebRTC)

    @staticmethod
    def _pose_names() -> list[str]:
        try:
            from avatar.head.poses import list_poses

            return list_poses()
        except Exception:  # the pose library is optional for the speech-only tabs
            return []

    # ------------------------------------------------------------ session state
    def session_folder(self, request: gr.Request | None) -> Path:
        """Each browser session writes its files into its own folder (cleaned up by the TTL like the rest)."""
        return self.folders.folder(getattr(request, "session_hash", None))

    def session(self, state: Session | None, request: gr.Request | None) -> Session:
        if state is None:
            state = Session(self.system.new_conversation() if self.system.chat_model else None,
                            self.session_folder(request))
            state.folder.mkdir(parents=True, exist_ok=True)
        return state

    @staticmethod
    def history_messages(state: Session) -> list[dict]:
        msgs: list[dict] = []
        for user, assistant in getattr(state.conversation, "rounds", []) or []:
            msgs += [{"role": "user", "content": chat_text(user)}, {"role": "assistant", "content": chat_text(assistant)}]
        return msgs

    # ------------------------------------------------------------ handlers
    @user_errors
    def transcribe(self, audio: str | None, language: str):
        """A generator, so that a cancelled request stops the transcription (see run_cancellable)."""
        for result in run_cancellable(lambda cancel: self.system.transcribe(audio, language, cancel=cancel)):
            yield gr.skip() if result is None else result.text

    @user_errors
    def speak(self, text: str, language: str, voice: str | None, speed: float | None, request: gr.Request) -> str:
        audio = self.system.speak(text, language, voice or None, speed)
        out = self.system.new_output_path(".wav", self.session_folder(request))
        media.save_wav(audio, out)
        return str(out)

    @user_errors
    def chat(self, text: str, state: Session | None, request: gr.Request):
        state = self.session(state, request)
        if state.conversation is None:
            raise gr.Error("no chat model is loaded (see the System tab)")
        msgs = self.history_messages(state) + [{"role": "user", "content": chat_text(text)},
                                               {"role": "assistant", "content": ""}]
        reply, stream = "", self.system.chat(state.conversation, text)
        for delta in stream:
            reply += delta
            msgs[-1]["content"] = chat_text(reply)
            yield msgs, state, ""
        yield (msgs if stream.notice else self.history_messages(state)), state, ""  # a notice is not in the history

    @user_errors
    def clear(self, state: Session | None, request: gr.Request):
        self.turns.stop(_session_key(request), "cleared")
        state = self.session(state, request)
        if state.conversation is not None:
            state.conversation.clear()
        return [], state

    def prepared_photo(self, photo):
        """The photo prepared once (cached by the system) with its warnings on screen, e.g. "2 faces found; using the
        largest": the user should know which face will talk."""
        face = self.system.prepare_photo(photo)
        for warning in face.warnings:
            gr.Warning(warning)
        return face

    @user_errors
    def render(self, photo, audio: str | None, emotion: str, pose: str, background: str, use_background: bool,
               size: int, enhance: bool, request: gr.Request, progress=gr.Progress()) -> str | None:
        if photo is None:
            raise gr.Error("upload a portrait photo first")
        if not audio:
            raise gr.Error("record or upload speech first")
        progress(0.0, desc="rendering")
        with self._job(request, "render") as cancel:  # first: a Stop during the photo's preparation counts too
            photo = self.prepared_photo(photo)
            cancel.check()
            out = self.system.new_output_path(".mp4", self.session_folder(request))
            return str(self.system.render(photo, audio, emotion, pose, background if use_background else None,
                                          int(size), bool(enhance), out_path=out,
                                          progress=lambda f, msg: progress(f, desc=msg), cancel=cancel))
        return None  # stopped

    @user_errors
    def matte(self, photo, background: str, request: gr.Request) -> str:
        if photo is None:
            raise gr.Error("upload a photo first")
        out = self.system.new_output_path(".png", self.session_folder(request))
        media.save_png(self.system.matte(photo, background), out)
        return str(out)

    @user_errors
    def enhance_photo(self, photo, request: gr.Request) -> str:
        if photo is None:
            raise gr.Error("upload a photo first")
        out = self.system.new_output_path(".png", self.session_folder(request))
        media.save_png(self.system.enhance(photo), out)
        return str(out)

    @user_errors
    def enhance_video(self, video: str | None, request: gr.Request, progress=gr.Progress()) -> str | None:
        if not video:
            raise gr.Error("upload a video first")
        progress(0.0, desc="enhancing")
        with self._job(request, "enhance") as cancel:
            out = self.system.new_output_path(".mp4", self.session_folder(request))
            return str(self.system.enhance(video, out, progress=lambda f, msg: progress(f, desc=msg), cancel=cancel))
        return None  # stopped

    @contextlib.contextmanager
    def _job(self, request: gr.Request, kind: str) -> Iterator[CancelToken]:
        """The session's running render or video enhancement: yields the token its Stop button sets. A stopped job
        (Cancelled) is swallowed here, so the handler goes on after the block: its player is left empty, with a
        notice instead of an error."""
        key = f"{_session_key(request)}/{kind}"
        handle = self.jobs.start(key)
        try:
            yield handle.cancel
        except Cancelled:
            gr.Info("Stopped.")
        finally:
            self.jobs.end(key, handle)

    def _wire_stop(self, button: gr.Button, kind: str, event: gr.events.Dependency) -> None:
        """A Stop button for a render or a video enhancement: it takes the job out of the queue if it is waiting
        there, and stops it at its next frame batch if it runs (waited for, bounded). Not queued behind the jobs it
        stops."""
        def stop(request: gr.Request) -> None:
            self.jobs.stop(f"{_session_key(request)}/{kind}")

        button.click(stop, None, None, cancels=[event], api_visibility="private", concurrency_id="control",
                     concurrency_limit=None)

    @user_errors
    def talk(self, audio: str | None, text: str, photo, pose: str, emotion: str, background: str,
             use_background: bool, size: int, enhance: bool, language: str, voice: str | None,
             speed: float | None, state: Session | None, request: gr.Request):
        """Streams one turn: chatbot updates, one MP4 chunk per sentence (to the streaming player, and as a plain
        file for API clients), then the whole reply as one file. Stop or a new turn of the session cancels it."""
        state = self.session(state, request)
        if state.conversation is None:
            raise gr.Error("no chat model is loaded (see the System tab)")
        if photo is None:
            raise gr.Error("upload a portrait photo (or take one with the webcam) first")
        if not audio and not (text or "").strip():
            raise gr.Error("record or upload speech, or type a message")
        photo = self.prepared_photo(photo)
        user_text, transcript, mood, user_mood = (text or "").strip(), "", "", ""
        state.turns += 1
        chunk_dir = state.folder / f"turn{state.turns}"
        key = _session_key(request)
        handle = self.turns.start(key)
        shown = self.history_messages(state) + [{"role": "user", "content": chat_text(user_text)},
                                                {"role": "assistant", "content": "…"}]
        yield shown, None, user_text, "", None, None, state  # the previous turn's videos leave the players
        try:
            events = self.system.respond(state.conversation, photo=photo, audio=audio if not user_text else None,
                                         text=user_text or None, language=language, emotion=emotion, pose=pose,
                                         background=background if use_background else None, size=int(size),
                                         enhance=bool(enhance), voice=voice or None, chunk_dir=chunk_dir,
                                         cancel=handle.cancel, heartbeat_s=HEARTBEAT_S, speed=speed)
            for ev in events:
                video = gr.skip()
                if ev.kind == "wait":  # nothing new: Gradio may close this generator now (a cancelled request)
                    yield (gr.skip(),) * 7
                    continue
                if ev.kind == "transcript":
                    transcript = ev.text
                    shown[-2]["content"] = chat_text(ev.text)
                elif ev.kind == "mood":
                    user_mood = mood = f"user mood: **{ev.text}**"
                elif ev.kind == "text":
                    shown[-1]["content"] = chat_text(ev.text) or "…"
                elif ev.kind == "chunk" and ev.path is not None:
                    handle.played(ev.text, ev.path)
                    video = str(ev.path)
                    mood = f"{user_mood} · avatar emotion: **{ev.emotion}**"
                elif ev.kind == "interrupted":
                    return  # Stop shows the history and what was heard; a newer turn takes over the players
                elif ev.kind == "done":
                    state.timings = ev.data["timings"]
                    # a fixed notice does not join the history: keep it on screen
                    if ev.data.get("notice"):
                        shown[-1]["content"] = chat_text(ev.text)
                    else:
                        shown = self.history_messages(state)
                yield shown, video, transcript or user_text, mood, gr.skip(), video, state
        finally:
            self.turns.end(key, handle)
        full = media.concat_mp4(handle.paths, chunk_dir / "reply.mp4") if handle.paths else None
        yield shown, gr.skip(), transcript or user_text, mood, str(full) if full else None, gr.skip(), state

    # ------------------------------------------------------------ the avatar at rest
    def _default_portrait(self) -> str | None:
        """The Talk tab's portrait until the user picks one (config head.default_portrait). Served as a static file
        (that one file only): a copy in Gradio's cache would be deleted after delete_cache's age like an upload,
        and the page would then send a portrait that no longer exists."""
        try:
            path = self.system.default_portrait()
        except AvatarError as e:  # a wrong path in the config: the app still starts, without a portrait
            log.warning("no default portrait: %s", e)
            return None
        if path is None:
            return None
        gr.set_static_paths([str(path)])
        return str(path)

    def idle(self, photo, size: int, background: str, use_background: bool) -> str | None:
        """The chosen portrait at rest, looping, for the reply player's place (none without a photo or a head). A
        photo it cannot use is said now as a warning; Send says it again as an error."""
        if photo is None or (self.system.head is None and self.system.remote is None):
            return None
        try:
            return str(self.system.idle_clip(photo, int(size), background if use_background else None))
        except AvatarError as e:
            gr.Warning(str(e))
            return None

    def _wire_idle(self, demo: gr.Blocks, idle: gr.Video, inputs: list) -> None:
        """The idle loop follows the portrait, size and background (talk() empties the reply player first, so the
        idle loop shows in its place until the first sentence of the reply arrives)."""
        photo, size, background, use_background = inputs
        for trigger in (demo.load, photo.change, size.change, background.change, use_background.change):
            trigger(user_errors(self.idle), inputs, idle, api_visibility="private", concurrency_id="gpu",
                    trigger_mode="always_last")

    def _speed_slider(self, elem_id: str) -> gr.Slider:
        low, high = SPEED_RANGE
        return gr.Slider(low, high, value=self.system.config.tts.speed, step=0.05, label="语速 Speed",
                         info="1 = normal; <1 slower, >1 faster", elem_id=elem_id)

    # ------------------------------------------------------------ keeping the conversation
    @user_errors
    def export_text(self, state: Session | None, request: gr.Request) -> str:
        """The session's conversation (every exchange since the last Clear) as a Markdown file."""
        state = self.session(state, request)
        rounds = state.conversation.transcript() if state.conversation is not None else []
        return str(self.system.export_markdown(rounds, state.folder))

    @user_errors
    def export_video(self, state: Session | None, request: gr.Request) -> str:
        """Every whole reply of the session's turns, in order, as one MP4."""
        state = self.session(state, request)
        return str(self.system.export_video(reply_videos(state.folder), state.folder))

    @user_errors
    def stop(self, state: Session | None, request: gr.Request):
        """Stop: the turn's workers end; the part of the reply that was already played stays in the history,
        marked as interrupted, and the players show just that part."""
        handle = self.turns.stop(_session_key(request))
        if state is None or handle is None or state.conversation is None:
            return gr.skip(), gr.skip(), gr.skip()
        self.system.interrupted(state.conversation, handle.spoken)
        full = media.concat_mp4(handle.paths, handle.paths[-1].parent / "reply.mp4") if handle.paths else None
        return self.history_messages(state), None, str(full) if full else None

    @user_errors
    def clear_talk(self, state: Session | None, request: gr.Request):
        """Clear history (the button or the Chatbot's own trash icon): a running turn is stopped first, so its reply
        cannot join the emptied history afterwards; the players are emptied too."""
        messages, state = self.clear(state, request)
        return messages, None, None, state

    # ------------------------------------------------------------ conversation mode (hands-free)
    @user_errors
    def live_switch(self, on: bool, live_id: str, photo, pose: str, emotion: str, background: str,
                    use_background: bool, size: int, enhance: bool, language: str, voice: str | None,
                    speed: float | None, state: Session | None, request: gr.Request):
        """The page has connected (on) or hung up (off); on: the WebRTC conversation gets this session's history
        and the Talk tab's settings. The timer keeps the Chatbot in step with the spoken turns."""
        state = self.session(state, request)
        if on and not self.live.configure(live_id, self.live_options(photo, pose, emotion, background, use_background,
                                                                      size, enhance, language, voice, speed),
                                          state.conversation):
            raise gr.Error("the hands-free connection did not start; switch conversation mode off and on again")
        return state, gr.Timer(active=bool(on))

    @user_errors
    def live_configure(self, live_id: str, *settings) -> None:
        if live_id and self.live.session(live_id) is not None:
            self.live.configure(live_id, self.live_options(*settings))

    def live_options(self, photo, pose, emotion, background, use_background, size, enhance, language, voice,
                     speed=None):
        return LiveOptions(self.prepared_photo(photo) if photo is not None else None, dict(
            language=language, emotion=emotion, pose=pose, background=background if use_background else None,
            size=int(size), enhance=bool(enhance), voice=voice, speed=speed))

    def live_history(self, state: Session | None) -> list[dict]:
        return self.history_messages(state) if state is not None and state.conversation is not None else []

    @user_errors
    def system_report(self, state: Session | None = None) -> tuple[str, dict]:
        report = self.system.doctor()
        rows = ["| stage | backend | device | load s | note |", "|---|---|---|---|---|"]
        for name, st in self.system.status.items():
            rows.append(f"| {name} | {st.backend} | {st.device} | {st.load_s:.1f} | {st.note or ''} |")
        timings = state.timings if state is not None else {}  # this session's own last turn
        text = "\n".join(rows) + "\n\n**Last turn timings (s):** " + (
            ", ".join(f"{k} {v:.2f}" for k, v in timings.items()) if timings else "none yet")
        return text, json.loads(json.dumps(report, default=str))

    # ------------------------------------------------------------ layout
    def build(self) -> gr.Blocks:
        emotions = [(EMOTION_LABELS[e], e) for e in EMOTIONS]
        poses = self.poses or ["talking"]
        voices = self.system.voices()
        enh_ok = self.system.enhancer is not None
        # uploads and Gradio's cached copies go after 15 minutes (an upload is used at once); outputs by their own TTL
        with gr.Blocks(title="Avatar · 数字人对话", delete_cache=(300, 900)) as demo:
            state = gr.State(None)
            gr.Markdown("# Avatar · 数字人对话\nTalk to a portrait: speak, and it answers with a voice and a face. "
                        "说话，头像用声音和表情回答你。")
            with gr.Tab("对话 Talk", id="talk"):
                # the avatar and the conversation first: a phone stacks the columns, so they come before the inputs
                with gr.Row(elem_id="talk-row"):
                    with gr.Column(scale=3, min_width=320, elem_id="talk-stage"):
                        # the portrait at rest, looping, where the reply plays: shown while the reply player is not
                        # playing, i.e. before the first turn and while a turn is being prepared
                        with gr.Group(elem_id="talk-screen"):  # one place for both (see TALK_CSS)
                            t_idle = gr.Video(label="回答 Reply", autoplay=True, loop=True, interactive=False,
                                              elem_id="talk-idle")
                            t_video = gr.Video(label="回答 Reply", streaming=True, autoplay=True, elem_id="talk-video")
                        t_mood = gr.Markdown()
                        t_chat = gr.Chatbot(label="对话记录 Conversation", height=320, elem_id="talk-chatbot")
                        t_full = gr.Video(label="完整回答 Whole reply (download)", elem_id="talk-full")
                        # each chunk as a plain MP4 for API clients (the streaming player's HLS segments are not
                        # served to them); hidden in the page
                        t_chunk = gr.File(label="chunk", visible=False, elem_id="talk-chunk")
                    with gr.Column(scale=2, min_width=320, elem_id="talk-inputs"):
                        t_photo = Photo(label="头像 Portrait", sources=["upload", "webcam"], type="filepath",
                                        value=self._default_portrait(), webcam_options=gr.WebcamOptions(mirror=True),
                                        elem_id="talk-photo")
                        t_audio = gr.Audio(label="语音 Speech (record or upload)", sources=["microphone", "upload"],
                                           type="filepath", editable=True, elem_id="talk-audio")
                        t_text = gr.Textbox(label="或输入文字 Or type", lines=2, elem_id="talk-text")
                        with gr.Row():
                            t_send = gr.Button("发送 Send", variant="primary", elem_id="talk-send")
                            t_stop = gr.Button("停止 Stop", variant="stop")
                            t_clear = gr.Button("清空历史 Clear history")
                        t_transcript = gr.Textbox(label="识别结果 Transcript", interactive=False, elem_id="talk-transcript")
                        with gr.Accordion("设置 Settings", open=True, elem_id="talk-settings") as t_settings:
                            with gr.Row():
                                t_check = gr.Button("查看识别 Check transcript", size="sm")
                                t_lang = Choice(LANGUAGE_CHOICES, value="auto", label="语言 Language")
                            t_pose = Choice(poses, value=self.system.config.head.pose if self.system.config.head.pose in poses else poses[0],
                                              label="头部动作 Head pose")
                            t_emotion = Choice([("自动 auto", "auto")] + emotions, value="auto", label="表情 Emotion")
                            with gr.Row():
                                t_use_bg = gr.Checkbox(label="纯色背景 Solid background", value=False)
                                t_bg = gr.ColorPicker(value="#2f6f4f", label="背景色 Colour")
                            with gr.Row():
                                t_size = IntRadio(SIZE_CHOICES, value=self.system.config.head.size, label="尺寸 Size")
                                t_enh = gr.Checkbox(label="人脸增强 Enhance face", value=False, interactive=enh_ok,
                                                    info=None if enh_ok else "GFPGAN weights not found (see System)")
                            t_voice = gr.Dropdown(voices, value=voices[0] if voices else None, label="声音 Voice",
                                                  visible=len(voices) > 1)
                            t_speed = self._speed_slider("talk-speed")
                        with gr.Accordion("保存对话 Keep the conversation", open=False, elem_id="talk-export"):
                            with gr.Row():
                                t_export_md = gr.Button("下载文字 Conversation as text (Markdown)", size="sm",
                                                        elem_id="talk-export-md")
                                t_export_mp4 = gr.Button("下载视频 All replies as one video (MP4)", size="sm",
                                                         elem_id="talk-export-mp4")
                            t_export = gr.File(label="下载 Download", elem_id="talk-export-file")
                build_live_controls(self, [t_photo, t_pose, t_emotion, t_bg, t_use_bg, t_size, t_enh, t_lang,
                                           t_voice, t_speed], state, t_chat)
                t_check.click(self.transcribe, [t_audio, t_lang], t_transcript, api_name="check_transcript",
                              api_visibility="private", **LIGHT)
                talk_ev = t_send.click(self.talk, [t_audio, t_text, t_photo, t_pose, t_emotion, t_bg, t_use_bg,
                                                   t_size, t_enh, t_lang, t_voice, t_speed, state],
                                       [t_chat, t_video, t_transcript, t_mood, t_full, t_chunk, state],
                                       api_name="talk", concurrency_id="gpu")
                # not queued behind renders (its own group): it only cancels and waits for the workers to end
                t_stop.click(self.stop, [state], [t_chat, t_video, t_full], cancels=[talk_ev],
                             api_visibility="private", concurrency_id="control", concurrency_limit=None)
                for clear in (t_clear.click, t_chat.clear):  # the button and the Chatbot's own trash icon
                    clear(self.clear_talk, [state], [t_chat, t_video, t_full, state], api_visibility="private",
                          concurrency_id="control", concurrency_limit=None)
                self._wire_idle(demo, t_idle, [t_photo, t_size, t_bg, t_use_bg])
                t_export_md.click(self.export_text, [state], t_export, api_name="export_text")
                t_export_mp4.click(self.export_video, [state], t_export, api_name="export_video")
                # a phone folds the settings away so that the reply and Send fit the screen
                demo.load(None, None, t_settings, js=FOLD_ON_PHONE, api_visibility="private")

            with gr.Tab("语音生成视频 Video from audio", id="render"):
                with gr.Row():
                    with gr.Column():
                        r_photo = Photo(label="头像 Portrait", sources=["upload", "webcam"], type="filepath",
                                        elem_id="render-photo")
                        r_audio = gr.Audio(label="语音 Speech", sources=["microphone", "upload"], type="filepath",
                                           elem_id="render-audio")
                        r_pose = Choice(poses, value=poses[min(2, len(poses) - 1)], label="头部动作 Head pose")
                        r_emotion = Choice(emotions, value="neutral", label="表情 Emotion")
                        with gr.Row():
                            r_use_bg = gr.Checkbox(label="纯色背景 Solid background", value=False)
                            r_bg = gr.ColorPicker(value="#2f6f4f", label="背景色 Colour")
                        with gr.Row():
                            r_size = IntRadio(SIZE_CHOICES, value=self.system.config.head.size, label="尺寸 Size")
                            r_enh = gr.Checkbox(label="人脸增强 Enhance face", value=False, interactive=enh_ok)
                        with gr.Row():
                            r_go = gr.Button("生成 Render", variant="primary", elem_id="render-go")
                            r_stop = gr.Button("停止 Stop", variant="stop", elem_id="render-stop")
                    r_video = gr.Video(label="视频 Video", elem_id="render-video")
                render_ev = r_go.click(self.render, [r_photo, r_audio, r_emotion, r_pose, r_bg, r_use_bg, r_size,
                                                     r_enh], r_video, api_name="render", concurrency_id="gpu")
                self._wire_stop(r_stop, "render", render_ev)

            with gr.Tab("聊天 Chat", id="chat"):
                c_bot = gr.Chatbot(label="聊天 Chat", height=400)
                c_text = gr.Textbox(label="消息 Message", placeholder="Say hello · 打个招呼")
                with gr.Row():
                    c_send = gr.Button("发送 Send", variant="primary")
                    c_clear = gr.Button("清空历史 Clear history")
                c_send.click(self.chat, [c_text, state], [c_bot, state, c_text], api_name="chat", **LIGHT)
                c_text.submit(self.chat, [c_text, state], [c_bot, state, c_text], api_name="chat_submit",
                              api_visibility="private", **LIGHT)
                for clear in (c_clear.click, c_bot.clear):  # the button and the Chatbot's own trash icon
                    clear(self.clear, [state], [c_bot, state], api_visibility="private")

            with gr.Tab("语音识别 ASR", id="asr"):
                a_audio = gr.Audio(label="语音 Speech", sources=["microphone", "upload"], type="filepath")
                a_lang = Choice(LANGUAGE_CHOICES, value="auto", label="语言 Language")
                a_go = gr.Button("识别 Transcribe", variant="primary")
                a_text = gr.Textbox(label="文字 Text", interactive=False)
                a_go.click(self.transcribe, [a_audio, a_lang], a_text, api_name="transcribe", **LIGHT)

            with gr.Tab("语音合成 TTS", id="tts"):
                s_text = gr.Textbox(label="文字 Text", lines=3, value="Hello! 你好！")
                with gr.Row():
                    s_lang = Choice(LANGUAGE_CHOICES, value="auto", label="语言 Language")
                    s_voice = gr.Dropdown(voices, value=voices[0] if voices else None, label="声音 Voice",
                                          visible=len(voices) > 1)
                s_speed = self._speed_slider("tts-speed")
                s_go = gr.Button("合成 Speak", variant="primary")
                s_audio = gr.Audio(label="语音 Speech", type="filepath")
                s_go.click(self.speak, [s_text, s_lang, s_voice, s_speed], s_audio, api_name="speak",
                           concurrency_id="gpu")

            with gr.Tab("抠图 Matting", id="matting"):
                with gr.Row():
                    with gr.Column():
                        m_photo = Photo(label="照片 Photo", sources=["upload", "webcam"], type="filepath",
                                           elem_id="matte-photo")
                        m_bg = gr.ColorPicker(value="#ffffff", label="背景色 Background colour")
                        m_go = gr.Button("抠图 Remove background", variant="primary", elem_id="matte-go")
                    m_out = gr.Image(label="结果 Result (PNG)", type="filepath", format="png", elem_id="matte-out")
                m_go.click(self.matte, [m_photo, m_bg], m_out, api_name="matte", concurrency_id="gpu")
                gr.Markdown("Tip: download the PNG and use it as the portrait on the Talk tab. "
                            "下载 PNG 后可作为对话页的头像。")

            with gr.Tab("人脸增强 Enhance", id="enhance"):
                if not enh_ok:
                    note = self.system.status.get("enhance")
                    gr.Markdown("Face enhancement is off: GFPGAN v1.4 weights were not found. Run "
                                "`python -m avatar download gfpgan` (or put GFPGANv1.4.pth under "
                                f"`{self.system.config.weights_path(self.system.config.enhance.gfpgan_path)}`) and "
                                "restart. " + (f"({note.note})" if note and note.note else ""))
                with gr.Row():
                    e_photo = Photo(label="照片 Photo", type="filepath", elem_id="enhance-photo")
                    e_photo_out = gr.Image(label="结果 Result", type="filepath", format="png", elem_id="enhance-out")
                e_go = gr.Button("增强照片 Enhance photo", interactive=enh_ok, elem_id="enhance-go")
                with gr.Row():
                    e_video = gr.Video(label="短视频 Short video", elem_id="enhance-video")
                    e_video_out = gr.Video(label="结果 Result", elem_id="enhance-video-out")
                with gr.Row():
                    e_vgo = gr.Button("增强视频 Enhance video", interactive=enh_ok, elem_id="enhance-video-go")
                    e_vstop = gr.Button("停止 Stop", variant="stop", interactive=enh_ok, elem_id="enhance-video-stop")
                e_go.click(self.enhance_photo, e_photo, e_photo_out, api_name="enhance", concurrency_id="gpu")
                video_ev = e_vgo.click(self.enhance_video, e_video, e_video_out, api_name="enhance_video",
                                       concurrency_id="gpu")
                self._wire_stop(e_vstop, "enhance", video_ev)

            with gr.Tab("系统 System", id="system"):
                y_table = gr.Markdown()
                y_json = gr.JSON(label="doctor")
                y_refresh = gr.Button("刷新 Refresh")
                y_refresh.click(self.system_report, [state], [y_table, y_json], api_name="system")
                demo.load(self.system_report, [state], [y_table, y_json], api_visibility="private")
        return demo


LIVE_PANEL = ('<div id="live-panel"><video id="live-video" autoplay playsinline width="256" height="256" '
              'style="display:none"></video><div id="live-status"></div></div>')
# the switch's js runs in the page first: it connects (or hangs up) and hands the conversation's id to the server
LIVE_SWITCH_JS = ("async (on, id, ...rest) => [on, on ? await window.avatarLive.start() : await window.avatarLive.stop(),"
                  " ...rest]")


def build_live_controls(app: AvatarApp, settings: list, state: gr.State, chatbot: gr.Chatbot) -> None:
    """The Talk tab's conversation mode (off by default): the microphone streams, the avatar answers when the user
    stops speaking and stops when they talk over it (avatar/live, over WebRTC)."""
    live_on = gr.Checkbox(label="对话模式 Conversation mode (hands-free: just talk; speak to interrupt)", value=False,
                          elem_id="talk-live")
    live_id = gr.Textbox(visible=False, elem_id="talk-live-id")
    js = (Path(__file__).parent / "assets" / "live" / "live.js").read_text(encoding="utf-8")
    gr.HTML(LIVE_PANEL, js_on_load=js, elem_id="talk-live-panel", container=False)
    timer = gr.Timer(1.0, active=False)
    live_on.change(app.live_switch, [live_on, live_id, *settings, state], [state, timer], js=LIVE_SWITCH_JS,
                   api_visibility="private", concurrency_id="control", concurrency_limit=None)
    live_on.change(lambda i: i, live_id, live_id, js="() => window.avatarLive.id || ''", api_visibility="private",
                   queue=False)
    for setting in settings:
        setting.change(app.live_configure, [live_id, *settings], None, api_visibility="private",
                       concurrency_id="control", concurrency_limit=None)
    timer.tick(app.live_history, state, chatbot, api_visibility="private", concurrency_id="control",
               concurrency_limit=None)


def reply_videos(folder: Path) -> list[Path]:
    """The whole replies of a session's turns in turn order (each turn writes turn<N>/reply.mp4)."""
    def number(path: Path) -> int:
        digits = path.parent.name.removeprefix("turn")
        return int(digits) if digits.isdigit() else 0

    return sorted(folder.glob("turn*/reply.mp4"), key=number)


def start_warmup(system: AvatarSystem) -> None:
    """Prepares the default portrait and its idle loop in the background at start-up, so the first visitor sees the
    avatar move at once instead of waiting for the first render."""
    def warm() -> None:
        try:
            photo = system.default_portrait()
            if photo is not None and system.head is not None:
                system.idle_clip(photo, system.config.head.size)
        except Exception:  # noqa: BLE001 - the page makes the clip itself then; the reason goes to the log
            log.exception("could not prepare the default portrait's idle loop")

    threading.Thread(target=warm, daemon=True, name="avatar-warmup").start()


def start_cleanup(system: AvatarSystem, every_s: float = 600.0) -> None:
    """Deletes old generated files in the background so disk use stays bounded."""
    def loop() -> None:
        while True:
            time.sleep(every_s)
            try:
                system.cleanup_outputs()
            except OSError:
                log.exception("cleanup failed")

    threading.Thread(target=loop, daemon=True, name="avatar-cleanup").start()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Avatar web app")
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--host", default=None, help="default 127.0.0.1 (use 0.0.0.0 to serve the network)")
    p.add_argument("--port", type=int, default=None, help="default 7860")
    p.add_argument("--share", action="store_true", help="also create a public Gradio share link")
    p.add_argument("--auth-file", default=None, help="a file of user:pass lines required to open the app "
                   "(or set AVATAR_AUTH=user:pass)")
    p.add_argument("--auth", default=None, help=argparse.SUPPRESS)  # kept for old scripts: shows the password in ps
    p.add_argument("--device", default=None)
    p.add_argument("--ray", action="store_true",
                   help="run the heavy stages as Ray Serve deployments ([cluster] mode = \"ray\"; see README)")
    args = p.parse_args(argv)
    try:
        args.credentials = load_credentials(args.auth_file, args.auth)  # before any model loads
    except AvatarError as e:
        p.error(str(e))
    return args


def _session_jobs(demo: gr.Blocks, session_hash: str) -> int:
    """The session's requests that wait in the queue or run (Gradio keeps them until they end)."""
    queue = getattr(demo, "_queue", None)
    events = list(getattr(queue, "event_ids_to_events", {}).values())
    return sum(1 for e in events if e.session_hash == session_hash and e.concurrency_id != "control")


def _is_control(demo: gr.Blocks, fn_index: int | None) -> bool:
    """Stop and Clear: never refused by the per-session cap."""
    fn = demo.fns.get(fn_index) if fn_index is not None else None
    return fn is not None and fn.concurrency_id == "control"


def launch(system: AvatarSystem, host: str | None = None, port: int | None = None, share: bool = False,
           credentials: dict[str, str] | None = None, block: bool = True):
    cfg = system.config
    avatar_app = AvatarApp(system)
    demo = avatar_app.build()
    # local: the stages share one device, one request at a time; ray: the deployments take every session at once
    # (their replicas batch the frames) and the in-process chat model serialises itself
    sessions = 1 if cfg.cluster.mode == "local" else max(4, 4 * cfg.cluster.render_replicas)
    demo.queue(default_concurrency_limit=sessions, max_size=32)
    start_cleanup(system)
    start_warmup(system)
    from starlette.middleware import Middleware

    uploads = Middleware(UploadLimiter, max_files=cfg.limits.uploads_per_10min,
                         max_mb=cfg.limits.upload_mb_per_10min)
    jobs = Middleware(JobCap, count_jobs=functools.partial(_session_jobs, demo), exempt=functools.partial(
        _is_control, demo), max_jobs=cfg.turn.max_jobs_per_session)
    demo.launch(server_name=host or cfg.server.host, server_port=port or cfg.server.port, share=share,
                auth=LoginGuard(credentials) if credentials else None, max_file_size=f"{cfg.limits.upload_max_mb}mb",
                allowed_paths=[str(system.output_dir)], prevent_thread_lock=True, show_error=False,
                app_kwargs={"middleware": [uploads, jobs]}, css=TALK_CSS, js=TALK_JS)
    mount_live(demo, avatar_app.live)
    if block:
        demo.block_thread()
    return demo


def mount_live(demo: gr.Blocks, hub: LiveHub) -> None:
    """The hands-free endpoints (/live/...) on the app's own FastAPI server, ahead of Gradio's routes: the page
    talks WebRTC to the same origin, so no second port, no CORS."""
    router = demo.app.router
    before = len(router.routes)
    router.include_router(routes(hub, allowed=functools.partial(logged_in, demo.app)))
    router.routes[:] = router.routes[before:] + router.routes[:before]


def logged_in(server, request) -> bool:
    """Gradio's own login check (its session cookie), for the routes added beside its UI; no logins: everyone."""
    if server.auth is None and server.auth_dependency is None:
        return True
    token = request.cookies.get(f"access-token-{server.cookie_id}") or request.cookies.get(
        f"access-token-unsecure-{server.cookie_id}")
    return server.tokens.get(token) is not None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = AvatarConfig.load(args.config)
        if args.device:
            cfg = cfg.replace(device=args.device)
        if args.ray:
            cfg = cfg.replace(**{"cluster.mode": "ray"})
        system = AvatarSystem.load(cfg)
        system.config_path = args.config
        launch(system, args.host, args.port, args.share, args.credentials)
    except AvatarError as e:  # a bad config file or a stage that cannot start: the message, not a traceback
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
