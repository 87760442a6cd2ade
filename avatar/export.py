"""A conversation to keep: its text as Markdown, and the session's reply videos joined into one MP4.

    markdown = conversation_markdown(rounds)             # rounds: [(user, reply), ...], oldest first
    path = join_replies(reply_videos, out_path)           # same-size MP4s -> one MP4 (video copied, audio re-encoded)
"""
from __future__ import annotations

import time
from pathlib import Path

from avatar.core import media
from avatar.core.errors import AvatarError

INTERRUPTED = "…[interrupted]"


class NothingToExport(AvatarError):
    pass


def conversation_markdown(rounds: list[tuple[str, str]], title: str = "Conversation with the avatar") -> str:
    """One section per exchange; an interrupted reply keeps its mark as a note."""
    if not rounds:
        raise NothingToExport("the conversation is empty: nothing to download yet")
    lines = [f"# {title}", "", f"_Exported {time.strftime('%Y-%m-%d %H:%M')}_", ""]
    for i, (user, reply) in enumerate(rounds, start=1):
        cut = reply.rstrip().endswith(INTERRUPTED)
        text = reply.rstrip()[: -len(INTERRUPTED)].rstrip() if cut else reply.strip()
        lines += [f"## {i}", "", f"**You:** {_quoted(user)}", "", f"**Avatar:** {_quoted(text)}"]
        lines += ["", "_(interrupted here)_"] if cut else []
        lines.append("")
    return "\n".join(lines)


def _quoted(text: str) -> str:
    """Text as Markdown shows it literally: markup characters escaped, line breaks kept."""
    for ch in "\\`*_[]<>#|":
        text = text.replace(ch, "\\" + ch)
    return text.strip().replace("\n", "  \n")


def join_replies(videos: list[Path], out_path: Path) -> Path:
    """The session's reply videos in order as one MP4. Replies must share one size and frame rate (the size
    setting changed mid-session: join the parts separately)."""
    videos = [Path(v) for v in videos if v and Path(v).is_file()]
    if not videos:
        raise NothingToExport("no reply video in this session yet (or they were deleted after the output TTL)")
    infos = [media.probe(v, decode=False) for v in videos]
    shapes = {(i.width, i.height, round(i.fps or 0, 2)) for i in infos}
    if len(shapes) > 1:
        sizes = ", ".join(sorted(f"{w}x{h}" for w, h, _ in shapes))
        raise AvatarError(f"the replies were made at different sizes ({sizes}); keep one size to join them")
    return media.concat_mp4(videos, out_path)
