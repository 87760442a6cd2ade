"""Command line: python -m avatar {transcribe,say,chat,render,talk,matte,enhance,doctor,bench,download} ...

Domain errors print their message and exit with status 2; nothing else is lost.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from avatar.core.config import AvatarConfig
from avatar.core.errors import AvatarError
from avatar.core.types import EMOTIONS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m avatar", description="Talk to an avatar made from one photo.")
    p.add_argument("--config", help="TOML config file (default: built-in defaults)")
    p.add_argument("--weights-dir", help="folder with user-supplied weights (default: checkpoints/)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("transcribe", help="speech file -> text")
    s.add_argument("file")
    s.add_argument("--lang", default="auto", help="auto | zh | en")

    s = sub.add_parser("say", help="text -> speech wav")
    s.add_argument("text")
    s.add_argument("--lang", default="auto")
    s.add_argument("--voice", default=None)
    s.add_argument("--out", required=True)

    s = sub.add_parser("chat", help="chat with the configured model (interactive, or --text once)")
    s.add_argument("--text", default=None)

    s = sub.add_parser("render", help="photo + speech (or text) -> talking-head MP4")
    s.add_argument("--photo", required=True)
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--audio")
    src.add_argument("--text")
    s.add_argument("--lang", default="auto")
    s.add_argument("--emotion", default="neutral", choices=EMOTIONS)
    s.add_argument("--intensity", type=float, default=None)
    s.add_argument("--pose", default=None)
    s.add_argument("--background", default="none", help="'#RRGGBB' or none")
    s.add_argument("--size", type=int, default=None, choices=(256, 512))
    s.add_argument("--engine", default=None, choices=("auto", "lite", "eat"))
    s.add_argument("--enhance", action="store_true")
    s.add_argument("--out", required=True)

    s = sub.add_parser("talk", help="one spoken turn (as the Talk tab): question -> transcript, reply, reply video")
    s.add_argument("--photo", required=True)
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--audio", help="the spoken question")
    src.add_argument("--text", help="or the question as text")
    s.add_argument("--lang", default="auto")
    s.add_argument("--emotion", default="auto", choices=("auto",) + EMOTIONS)
    s.add_argument("--pose", default=None)
    s.add_argument("--background", default="none", help="'#RRGGBB' or none")
    s.add_argument("--size", type=int, default=None, choices=(256, 512))
    s.add_argument("--enhance", action="store_true")
    s.add_argument("--out", required=True, help="the whole reply as one MP4")

    s = sub.add_parser("matte", help="photo -> photo on a solid background colour (PNG)")
    s.add_argument("photo")
    s.add_argument("--background", default="#00ff00")
    s.add_argument("--out", required=True)

    s = sub.add_parser("enhance", help="photo or video -> face-enhanced result")
    s.add_argument("input")
    s.add_argument("--out", required=True)

    s = sub.add_parser("doctor", help="whether the app works now, which backend each stage runs, which weights "
                                      "are missing")
    s.add_argument("--json", action="store_true")
    s.add_argument("--verbose", action="store_true", help="every missing file's path")

    s = sub.add_parser("bench", help="per-stage speed on this machine")
    s.add_argument("--json", action="store_true")
    s.add_argument("--stages", default="startup,asr,tts,chat,head", help="comma-separated")
    s.add_argument("--sessions", type=int, default=0, metavar="N",
                   help="instead: up to N sessions render a clip at once, local mode and ray mode side by side")
    s.add_argument("--clip-s", type=float, default=10.0, help="with --sessions: clip length (s)")
    s.add_argument("--size", type=int, choices=(256, 512), help="with --sessions: output size (default: config)")
    s.add_argument("--enhance", action="store_true", help="with --sessions: GFPGAN on every frame")
    s.add_argument("--modes", default="local,ray", help="with --sessions: local, ray or both")
    s.add_argument("--turns", type=int, default=0, metavar="N",
                   help="instead: N spoken turns through the pipeline: end of speech -> first audio / video, p50/p95")
    s.add_argument("--media", default="raw,mp4",
                   help="with --turns: raw (frames, as the hands-free mode streams them), mp4 (chunks) or both")
    s.add_argument("--photo", default=None, help="with --turns: the portrait (default: a test image)")

    s = sub.add_parser("download", help="download and verify the original design's weights")
    s.add_argument("names", nargs="*", help="model names (default: all); see `doctor`")
    s.add_argument("--yes", "--accept-licences", dest="yes", action="store_true",
                   help="accept the licences that need explicit acceptance, without asking")
    s.add_argument("--list", action="store_true", help="list the models and exit")
    return p


def load_config(args: argparse.Namespace) -> AvatarConfig:
    cfg = AvatarConfig.load(args.config)
    changes = {}
    if args.weights_dir:
        changes["weights_dir"] = args.weights_dir
    if args.device:
        changes["device"] = args.device
    if getattr(args, "engine", None):
        changes["head.backend"] = args.engine
    return cfg.replace(**changes) if changes else cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args)
        if getattr(args, "out", None):
            args.out = str(Path(args.out).expanduser())  # "--out=~/x.wav": the shell leaves that ~ alone
            _check_out(Path(args.out))
        check_arguments(args, cfg)  # every argument and input file, before any model loads
        return COMMANDS[args.command](args, cfg)
    except AvatarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _check_out(out: Path) -> None:
    """Before any model work: --out must name a file whose folder exists or can be made."""
    if out.is_dir():
        raise AvatarError(f"--out {out} is a folder; give a file name in it, e.g. {out / ('out' + _SUFFIX)}")
    try:
        out.expanduser().parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AvatarError(f"cannot create the folder for --out {out}: {e.strerror}") from None


_SUFFIX = ".wav"


def check_arguments(args: argparse.Namespace, cfg: AvatarConfig) -> None:
    """The checks a command's stages would make after loading (5-8 s), made first: files readable and of the right
    kind, text, colour, numbers, device. Raises AvatarError with the sentence."""
    from avatar.core import media, validate
    from avatar.core.devices import resolve_device
    from avatar.core.text import check_text

    from avatar.core.types import check_language

    resolve_device(cfg.device)
    lim = cfg.limits
    if getattr(args, "lang", None):
        check_language(args.lang)
    for name in ("file", "audio"):
        if getattr(args, name, None):
            media.load_audio(getattr(args, name), 16000, lim.max_render_audio_s)
    for name in ("photo", "input"):
        path = getattr(args, name, None)
        if path and not (name == "input" and _is_video(path)):
            validate.check_photo(media.load_image(path, lim.max_image_megapixels), lim.min_image_side)
    if getattr(args, "text", None) is not None and args.command in ("say", "render", "chat", "talk"):
        check_text(args.text, lim.max_text_chars)
    if getattr(args, "background", None) is not None:
        validate.parse_colour(args.background)
    if getattr(args, "intensity", None) is not None:
        validate.finite_number(args.intensity, "--intensity", 0.0, 1.0)
    if getattr(args, "pose", None):
        from avatar.head.poses import load_pose

        load_pose(args.pose, 1)


def _is_video(path: str) -> bool:
    from avatar.core import media

    return Path(path).is_file() and media.probe(path, decode=False).is_video


def _system(cfg: AvatarConfig, *stages: str):
    from .system import AvatarSystem

    return AvatarSystem.load(cfg, stages=stages)


def cmd_transcribe(args, cfg) -> int:
    print(_system(cfg, "asr").transcribe(args.file, args.lang).text)
    return 0


def cmd_say(args, cfg) -> int:
    from avatar.core import media

    audio = _system(cfg, "tts").speak(args.text, args.lang, args.voice)
    media.save_wav(audio, args.out)
    print(f"wrote {args.out} ({audio.duration_s:.2f} s)")
    return 0


def cmd_chat(args, cfg) -> int:
    system = _system(cfg, "chat")
    conv = system.new_conversation()
    if args.text is not None:
        print("".join(system.chat(conv, args.text)))
        return 0
    print("Chat with the avatar's model. Empty line or Ctrl-D quits; /clear forgets the history.")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            return 0
        if not line:
            return 0
        if line == "/clear":
            conv.clear()
            continue
        try:
            print("avatar> ", end="", flush=True)
            for delta in system.chat(conv, line):
                print(delta, end="", flush=True)
            print()
        except AvatarError as e:
            print(f"\nerror: {e}", file=sys.stderr)


def cmd_render(args, cfg) -> int:
    stages = ("head", "matting") + (("tts",) if args.text else ()) + (("enhance",) if args.enhance else ())
    system = _system(cfg, *stages)
    speech = args.audio
    if args.text:
        speech = system.speak(args.text, args.lang)
    out = system.render(args.photo, speech, args.emotion, args.pose, args.background, args.size, args.enhance,
                        out_path=args.out, intensity=args.intensity, progress=_print_progress)
    print(f"wrote {out}")
    return 0


def cmd_talk(args, cfg) -> int:
    """The same pipelined turn as the Talk tab and /talk; chunks are joined into --out at the end."""
    import tempfile

    from avatar.core import media

    system = _system(cfg, "asr", "tts", "chat", "head", "matting", *(("enhance",) if args.enhance else ()))
    conv = system.new_conversation()
    with tempfile.TemporaryDirectory(prefix="avatar-talk-") as folder:
        chunks = []
        for ev in system.respond(conv, photo=args.photo, audio=args.audio, text=args.text, language=args.lang,
                                 emotion=args.emotion, pose=args.pose, background=args.background,
                                 size=args.size, enhance=args.enhance, chunk_dir=Path(folder)):
            if ev.kind == "transcript":
                print(f"you> {ev.text}")
            elif ev.kind == "chunk":
                chunks.append(ev.path)
            elif ev.kind == "done":
                print(f"avatar> {ev.text}")
        media.concat_mp4(chunks, Path(args.out))
    print(f"wrote {args.out}")
    return 0


def cmd_matte(args, cfg) -> int:
    from avatar.core import media

    media.save_png(_system(cfg, "matting").matte(args.photo, args.background), args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_enhance(args, cfg) -> int:
    from avatar.core import media

    system = _system(cfg, "enhance")
    result = system.enhance(args.input, args.out, progress=_print_progress)
    if not isinstance(result, Path):
        media.save_png(result, args.out)
    print(f"wrote {args.out}")
    return 0


def _print_progress(_fraction: float | None, text: str) -> None:
    """A long render or video enhancement: "rendered k/N frames" lines on stderr (stdout keeps the result)."""
    print(text, file=sys.stderr, flush=True)


def cmd_doctor(args, cfg) -> int:
    from avatar.weights.doctor import doctor_report, format_report

    report = doctor_report(cfg, config_path=args.config)
    print(json.dumps(report, indent=2, ensure_ascii=False, default=str) if args.json
          else format_report(report, verbose=args.verbose))
    return 0


def cmd_bench(args, cfg) -> int:
    out = _json_stdout() if args.json else sys.stdout
    if args.turns:
        result = _bench_turns(args, cfg)
    elif args.sessions:
        result = _bench_sessions(args, cfg)
    else:
        from .bench import run_bench

        result = run_bench(cfg, [s.strip() for s in args.stages.split(",") if s.strip()])
    print(json.dumps(result, indent=2 if not args.json else None, ensure_ascii=False, default=str), file=out)
    out.flush()
    return 0


def _json_stdout():
    """--json: the result must be the only thing on stdout, but libraries write there themselves (Ray's raylet
    while Serve shuts down, TensorFlow): from now on file descriptor 1 goes to stderr, and the returned stream, on the
    real stdout, carries the JSON alone."""
    import os

    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    return out


def _bench_sessions(args, cfg) -> dict:
    if args.sessions < 1 or args.clip_s <= 0:
        raise AvatarError("--sessions and --clip-s must be positive")
    from .bench_sessions import run_sessions

    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if not modes or set(modes) - {"local", "ray"}:
        raise AvatarError(f"--modes takes local, ray or local,ray, not {args.modes!r}")
    return run_sessions(cfg, args.sessions, args.clip_s, args.size, args.enhance, modes)


def _bench_turns(args, cfg) -> dict:
    import tempfile

    from .bench_turn import run_turn_bench

    media = tuple(m.strip() for m in args.media.split(",") if m.strip())
    if args.turns < 1 or not media or set(media) - {"raw", "mp4"}:
        raise AvatarError(f"--turns must be positive and --media raw, mp4 or raw,mp4 (not {args.media!r})")
    with tempfile.TemporaryDirectory(prefix="avatar-bench-") as folder:
        return run_turn_bench(cfg, args.turns, media, Path(folder), args.photo)


def cmd_download(args, cfg) -> int:
    from avatar.weights.download import main_download

    return main_download(cfg, args.names, accept=args.yes, list_only=args.list)


COMMANDS = {"transcribe": cmd_transcribe, "say": cmd_say, "chat": cmd_chat, "render": cmd_render, "talk": cmd_talk,
            "matte": cmd_matte, "enhance": cmd_enhance, "doctor": cmd_doctor, "bench": cmd_bench,
            "download": cmd_download}
