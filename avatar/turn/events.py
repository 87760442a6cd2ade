"""What a turn hands to its consumer (the Talk tab, the API, the CLI, the hands-free transport): a stream of events."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INTERRUPTED_MARK = " …[interrupted]"  # ends the spoken part of a reply that the user cut off, in the history


@dataclass(eq=False)  # events carry arrays: compared by identity
class TurnEvent:
    """One step of a streamed conversation turn (see AvatarSystem.respond).

    kind: transcript | mood | text | audio | frames | chunk | done | interrupted, and "wait" (nothing new, sent
    every heartbeat_s when the caller asked for it). "audio": a chunk's speech is ready
    (before its frames; data["audio"], data["index"]); "frames" (media "raw" or "both"): a batch of the chunk's
    frames as soon as it is drawn (data["frames"] uint8 (B,H,W,3), data["index"], data["first_frame"]: its position
    in the chunk); "chunk": the chunk is complete (path: its MP4 with media "mp4" or "both"; data["audio"],
    data["frames"] (all of them, or None without a photo), data["index"]). data["t"] is time.perf_counter() when the
    event was made (latency measurements)."""

    kind: str
    text: str = ""  # transcript / reply so far / the chunk's text
    path: Path | None = None  # chunk: an MP4 of one chunk
    emotion: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data.setdefault("t", time.perf_counter())
