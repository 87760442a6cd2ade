"""What the web server protects, without Gradio (app.py wires it in): logins with a rate limit, per-client upload
limits, a cap on each session's queued jobs, chat text shown as text (no HTML, no remote images), unguessable per-session output folders.

What is not protected is listed in README's "Security" section.
"""
from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import os
import re
import secrets
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from avatar.core.errors import AvatarError

log = logging.getLogger("avatar.server")

AUTH_ENV = "AVATAR_AUTH"  # "user:pass" (or several, separated by newlines or commas)


# ---------------------------------------------------------------- logins
def load_credentials(auth_file: str | None = None, legacy: str | None = None) -> dict[str, str]:
    """user -> password from --auth-file (one user:pass a line), else $AVATAR_AUTH, else the old --auth value
    (visible in `ps`: a warning says so). {} = no login."""
    if auth_file:
        try:
            text = Path(auth_file).expanduser().read_text(encoding="utf-8")
        except OSError as e:
            raise AvatarError(f"cannot read --auth-file {auth_file}: {e.strerror}") from None
    elif os.environ.get(AUTH_ENV):
        text = os.environ[AUTH_ENV]
    elif legacy is not None:
        log.warning("--auth puts the password on the command line, where `ps` shows it to every user of this "
                    "machine: use --auth-file FILE or the %s environment variable", AUTH_ENV)
        text = legacy
    else:
        return {}
    pairs = [line.strip() for line in re.split(r"[\n,]", text) if line.strip() and not line.startswith("#")]
    if not pairs or not all(re.fullmatch(r"[^:\s]+:.+", p) for p in pairs):
        raise AvatarError("logins must look like user:pass (a user name, a colon, a password), one per line")
    return dict(p.split(":", 1) for p in pairs)


class LoginGuard:
    """Gradio's auth callable: constant-time password checks; after `max_failures` wrong passwords within
    `window_s` (per user name, and 4x that for all names together) every login is refused for `lockout_s`."""

    def __init__(self, credentials: dict[str, str], max_failures: int = 5, window_s: float = 60.0,
                 lockout_s: float = 60.0) -> None:
        self._credentials = credentials
        self.max_failures, self.window_s, self.lockout_s = max_failures, window_s, lockout_s
        self._failures: dict[str, deque] = {}
        self._all: deque = deque()
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, username: str, password: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < max(self._locked_until.get(username, 0.0), self._locked_until.get("*", 0.0)):
                return False
        expected = self._credentials.get(username, "")
        ok = hmac.compare_digest(expected.encode(), (password or "").encode()) and username in self._credentials
        if not ok:
            self._fail(username, now)
        return ok

    def _fail(self, username: str, now: float) -> None:
        with self._lock:
            for key, limit, log_ in ((username, self.max_failures, self._failures.setdefault(username, deque())),
                                     ("*", 4 * self.max_failures, self._all)):
                log_.append(now)
                while log_ and now - log_[0] > self.window_s:
                    log_.popleft()
                if len(log_) >= limit:
                    self._locked_until[key] = now + self.lockout_s
                    log.warning("login: %d wrong passwords for %s within %.0f s; logins refused for %.0f s",
                                len(log_), "all users" if key == "*" else repr(key), self.window_s, self.lockout_s)
                    log_.clear()


# ---------------------------------------------------------------- uploads
class UploadLimiter:
    """ASGI middleware: each client (by address) may upload at most `max_files` files and `max_mb` megabytes per
    `window_s`; more gets HTTP 429 with a sentence. Gradio deletes uploads that no request used (delete_cache)."""

    def __init__(self, app, max_files: int = 30, max_mb: float = 200.0, window_s: float = 600.0) -> None:
        self.app, self.max_files, self.max_bytes, self.window_s = app, max_files, max_mb * 1e6, window_s
        self._seen: dict[str, deque] = {}
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope.get("type") == "http" and scope.get("method") == "POST" and scope.get("path", "").endswith("/upload"):
            refusal = self._admit(scope)
            if refusal:
                await _reply(send, 429, refusal)
                return
        await self.app(scope, receive, send)

    def _admit(self, scope) -> str | None:
        client = (scope.get("client") or ("?", 0))[0]
        size = int(dict(scope.get("headers") or []).get(b"content-length", b"0") or 0)
        now = time.monotonic()
        with self._lock:
            seen = self._seen.setdefault(client, deque())
            while seen and now - seen[0][0] > self.window_s:
                seen.popleft()
            files, total = len(seen) + 1, sum(s for _, s in seen) + size
            if files > self.max_files or total > self.max_bytes:
                return (f"too many uploads: at most {self.max_files} files and {self.max_bytes / 1e6:.0f} MB per "
                        f"{self.window_s / 60:.0f} minutes; try again later")
            seen.append((now, size))
        return None


# ---------------------------------------------------------------- jobs per session
class JobCap:
    """ASGI middleware: one session (a browser tab, an API client) may have at most `max_jobs` requests queued or
    running; a further one gets HTTP 429 with a sentence, so a client that queues 34 jobs cannot fill the shared
    queue and lock every other user out. count_jobs(session_hash) -> the session's jobs in the queue; exempt(fn_index)
    -> True for requests that only stop or clear (Stop must work when the cap is reached)."""

    def __init__(self, app, count_jobs: Callable[[str], int], exempt: Callable[[int], bool] = lambda _: False,
                 max_jobs: int = 4) -> None:
        self.app, self.count_jobs, self.exempt, self.max_jobs = app, count_jobs, exempt, max_jobs
        self._joining: dict[str, int] = {}  # joins let through whose job the queue may not list yet

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "") if scope.get("type") == "http" and scope.get("method") == "POST" else ""
        if not path.endswith("/queue/join"):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        session, fn_index = _join_request(body)
        if session is None or self.exempt(fn_index):
            await self.app(scope, _replay(body, receive), send)
            return
        if self.count_jobs(session) + self._joining.get(session, 0) >= self.max_jobs:
            log.info("refused a job of session %s: %d queued or running", session[:8], self.max_jobs)
            await _reply(send, 429, f"too many requests at once: at most {self.max_jobs} per session may wait or "
                                    "run; wait for one to finish")
            return
        self._joining[session] = self._joining.get(session, 0) + 1
        try:  # one event loop: no lock needed around the counter
            await self.app(scope, _replay(body, receive), send)
        finally:
            self._joining[session] -= 1
            if not self._joining[session]:
                del self._joining[session]


async def _read_body(receive) -> bytes:
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


def _replay(body: bytes, receive):
    """A receive() that hands the already-read body to the app once, then passes on (disconnects)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _join_request(body: bytes) -> tuple[str | None, int | None]:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return None, None  # the queue refuses it itself
    session = data.get("session_hash") if isinstance(data, dict) else None
    fn_index = data.get("fn_index") if isinstance(data, dict) else None
    return (str(session) if session else None), (fn_index if isinstance(fn_index, int) else None)


async def _reply(send, status: int, message: str) -> None:
    body = json.dumps({"detail": message, "error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------- what the pages show
_MD_IMAGE = re.compile(r"!\s*\[")


def chat_text(text: str) -> str:
    """A message shown as text: HTML is escaped and markdown images are broken up, so neither a user nor a steered
    chat model can make the browser fetch a remote URL (links stay links, which the user must click)."""
    return _MD_IMAGE.sub("!\u200b[", html.escape(text or "", quote=False))


class SessionFolders:
    """Each session's output folder is named by an HMAC of its session hash with a key made at start-up: the URL of a
    file cannot be guessed from the session hash, nor from another session's files."""

    def __init__(self, root: Path) -> None:
        self.root, self._key = root, secrets.token_bytes(32)

    def folder(self, session_hash: str | None) -> Path:
        tag = hmac.new(self._key, (session_hash or "anonymous").encode("utf-8", "replace"), hashlib.sha256)
        return self.root / "sessions" / tag.hexdigest()[:32]
