"""Downloads the original design's weights listed in avatar/weights/models.toml: resumable, verified, licence-aware.

    python -m avatar download [NAMES...] [--yes] [--weights-dir D] [--list]     (NAMES: models, stages or "all")
    python scripts/download_models.py --help                                     (same, plus mirror/verify flags)

Each file is fetched into `<file>.part` (an HTTP Range request resumes a partial one), checked against its size and
SHA-256/SHA-1 when the manifest knows them, then moved into place. A file that fails its checksum is kept as
`<file>.bad` and the next source is tried. Archives (zip/tar) go to `<weights_dir>/.downloads/` and only the listed
members are extracted. Google Drive's "can't scan for viruses" confirmation page is followed.

Sources are built from repo + revision + path. Point them elsewhere with AVATAR_DOWNLOAD_MIRROR=http://host/prefix
(every source becomes <prefix>/<kind>/..., kind = hf, modelscope, github_release, github_raw, gdrive, url), with
HF_ENDPOINT for Hugging Face only, or with the `base_urls` argument (kind -> base URL).
This is the only module that touches the network; the app never calls it at run time.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import html
import os
import re
import shutil
import sys
import tarfile
import time
import urllib.parse
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from avatar.core.config import AvatarConfig
from avatar.core.errors import AvatarError

from . import manifest as mf
from .manifest import Entry, FileSpec, Manifest, Source

MIRROR_ENV = "AVATAR_DOWNLOAD_MIRROR"
DEFAULT_BASES = {
    "url": "",
    "hf": "https://huggingface.co",
    "modelscope": "https://modelscope.cn",
    "github_release": "https://github.com",
    "github_raw": "https://raw.githubusercontent.com",
    "gdrive": "https://drive.google.com",
}
USER_AGENT = "avatar-downloader/1.0 (+python-requests)"


class DownloadError(AvatarError):
    """A file could not be fetched or verified; the message names the model, the file and the URL."""


class ChecksumMismatch(DownloadError):
    pass


class SourceNotFound(DownloadError):
    """The server answered but has no such file (HTTP 401/403/404/410, or a web page instead of the file)."""


class _Retryable(Exception):
    """A transient failure (connection lost, timeout, HTTP 429/5xx): retried with backoff, resuming the .part."""


@dataclass(frozen=True)
class DownloadOptions:
    accept_licences: bool = False  # accept every licence that needs explicit acceptance (--yes)
    interactive: bool | None = None  # ask on the terminal; None = when stdin is a terminal
    base_urls: Mapping[str, str] | None = None  # source kind -> base URL (overrides the mirror env and defaults)
    retries: int = 4  # extra tries per source after a transient failure
    backoff_s: float = 1.0  # first wait between tries; doubles each time
    timeout_s: float = 60.0  # connect/read timeout per request
    chunk_bytes: int = 1 << 20
    progress: bool = True  # tqdm bars on stderr
    keep_archives: bool = False  # keep downloaded zips/tars in <weights_dir>/.downloads after extraction
    include_optional: bool = True  # also fetch files marked optional
    verify_existing: bool = False  # re-hash files already in place (else a present file with the right size is kept)


@dataclass
class ModelResult:
    name: str
    status: str  # ready (already there) | downloaded | failed | skipped (licence not accepted)
    target: str
    files: list[str] = field(default_factory=list)  # files fetched this run
    bytes_downloaded: int = 0
    errors: list[str] = field(default_factory=list)  # required files that could not be fetched
    warnings: list[str] = field(default_factory=list)  # optional files that could not be fetched (still ready)


@dataclass
class DownloadSummary:
    weights_dir: str
    results: list[ModelResult]

    @property
    def ok(self) -> bool:
        return all(r.status in ("ready", "downloaded") for r in self.results)

    def format(self) -> str:
        lines = [f"Summary (weights_dir: {self.weights_dir})"]
        for r in self.results:
            what = {"ready": "already present",
                    "downloaded": f"{len(r.files)} file(s), {_mb(r.bytes_downloaded)} downloaded"}.get(r.status, "")
            lines.append(f"  {r.name:<22} {r.status.upper() if r.status == 'failed' else r.status:<10} "
                         f"{what}  -> {r.target}")
            lines += [f"      {e}" for e in r.errors]
            lines += [f"      optional file not downloaded (the model works without it): {w}" for w in r.warnings]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ URLs
def resolve_bases(base_urls: Mapping[str, str] | None = None) -> dict[str, str]:
    """Base URL per source kind: defaults < HF_ENDPOINT < AVATAR_DOWNLOAD_MIRROR < base_urls."""
    bases = dict(DEFAULT_BASES)
    if os.environ.get("HF_ENDPOINT"):
        bases["hf"] = os.environ["HF_ENDPOINT"]
    mirror = os.environ.get(MIRROR_ENV, "").rstrip("/")
    if mirror:
        bases.update({kind: f"{mirror}/{kind}" for kind in bases})
    bases.update(base_urls or {})
    return {k: v.rstrip("/") for k, v in bases.items()}


def source_url(src: Source, bases: Mapping[str, str]) -> str:
    """The download URL of a manifest source."""
    q, qp, base = urllib.parse.quote, urllib.parse.quote_plus, bases.get(src.kind, "")
    if src.kind == "hf":
        return f"{base}/{src.ref}/resolve/{q(src.revision or 'main', safe='')}/{q(src.file)}"
    if src.kind == "modelscope":
        return (f"{base}/api/v1/models/{src.ref}/repo?Revision={qp(src.revision or 'master')}"
                f"&FilePath={qp(src.file)}")
    if src.kind == "github_release":
        return f"{base}/{src.ref}/releases/download/{q(src.tag)}/{q(src.asset)}"
    if src.kind == "github_raw":
        return f"{base}/{src.ref}/{src.revision or 'HEAD'}/{q(src.file)}"
    if src.kind == "gdrive":
        return f"{base}/uc?export=download&id={qp(src.ref)}"
    if src.kind == "url":
        if not base:
            return src.ref
        parts = urllib.parse.urlsplit(src.ref)  # mirrored as <base>/<host>/<path>
        return f"{base}/{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")
    raise DownloadError(f"unknown source kind {src.kind!r}")


# ------------------------------------------------------------------------------------------------ HTTP
class _Fetcher:
    """One requests.Session; fetches URLs into .part files with resume, retries and progress bars."""

    def __init__(self, opts: DownloadOptions, log: Callable[[str], None]):
        import requests

        self.requests = requests
        self.session = requests.Session()
        # identity: Content-Length is then the file's byte count, and a Range offset means the same bytes
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        self.opts, self.log = opts, log

    def fetch(self, url: str, part: Path, kind: str, label: str) -> int:
        """Downloads url into `part` (resuming what is there). Returns the bytes received in this call."""
        part.parent.mkdir(parents=True, exist_ok=True)
        received = 0
        for attempt in range(self.opts.retries + 1):
            try:
                return received + self._attempt(url, part, kind, label)
            except _Retryable as e:
                received += getattr(e, "received", 0)
                if attempt == self.opts.retries:
                    kept = f" (the partial file {part} is kept: run again to resume)" if part.exists() else ""
                    raise DownloadError(f"{label}: {url}: {e}; gave up after {attempt + 1} tries{kept}") from None
                wait_s = self.opts.backoff_s * 2 ** attempt
                self.log(f"    retrying {label} in {wait_s:.1f} s ({e})")
                time.sleep(wait_s)
        raise AssertionError("unreachable")

    def _attempt(self, url: str, part: Path, kind: str, label: str) -> int:
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self._get(url, headers, kind, label)
        with resp:
            if resp.status_code == 416:  # our .part already reaches the end; verification decides
                return 0
            mode = self._resume_mode(resp, offset, part, url, label)
            if mode == "wb":
                offset = 0
            length = resp.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            received = self._stream(resp, part, mode, offset, total, label)
        if total is not None and part.stat().st_size < total:
            err = _Retryable(f"connection closed at {part.stat().st_size} of {total} bytes")
            err.received = received  # type: ignore[attr-defined]
            raise err
        return received

    def _resume_mode(self, resp, offset: int, part: Path, url: str, label: str) -> str:
        code = resp.status_code
        if code in (401, 403, 404, 410):
            raise SourceNotFound(f"{label}: HTTP {code} for {url}")
        if code == 429 or code >= 500:
            raise _Retryable(f"HTTP {code}")
        if code == 206:
            start = _content_range_start(resp.headers.get("Content-Range", ""))
            if start != offset:  # a server that resumes elsewhere: start over rather than corrupt the file
                part.unlink(missing_ok=True)
                raise _Retryable(f"server resumed at byte {start}, not {offset}")
            return "ab"
        if code == 200:
            return "wb"
        raise DownloadError(f"{label}: unexpected HTTP {code} for {url}")

    def _stream(self, resp, part: Path, mode: str, offset: int, total: int | None, label: str) -> int:
        from tqdm import tqdm

        received = 0
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=label[-40:],
                   disable=not self.opts.progress, leave=False, file=sys.stderr)
        try:
            with open(part, mode) as fh:
                for chunk in _raw_chunks(resp.raw, self.opts.chunk_bytes):
                    fh.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (self.requests.ConnectionError, self.requests.Timeout, self.requests.exceptions.ChunkedEncodingError,
                *_URLLIB3_ERRORS) as e:
            err = _Retryable(f"connection lost after {received} bytes ({type(e).__name__})")
            err.received = received  # type: ignore[attr-defined]
            raise err from None
        finally:
            bar.close()
        return received

    def _get(self, url: str, headers: dict, kind: str, label: str):
        resp = self._request(url, headers)
        if kind == "gdrive" and resp.status_code in (200, 206) and _is_html(resp):
            page, page_url = resp.text, resp.url
            resp.close()
            confirmed = gdrive_confirm_url(page, page_url, self.session.cookies)
            if not confirmed:
                raise SourceNotFound(f"{label}: Google Drive answered {url} with a web page, not the file "
                                     "(download quota exceeded, or the file is not shared publicly)")
            resp = self._request(confirmed, headers)
            if resp.status_code in (200, 206) and _is_html(resp):
                resp.close()
                raise SourceNotFound(f"{label}: Google Drive still sends a web page after confirming ({confirmed})")
        return resp

    def _request(self, url: str, headers: dict):
        try:
            return self.session.get(url, headers=headers, stream=True, timeout=self.opts.timeout_s)
        except (self.requests.ConnectionError, self.requests.Timeout) as e:
            raise _Retryable(f"cannot connect ({type(e).__name__})") from None


def _urllib3_errors() -> tuple[type[BaseException], ...]:
    from urllib3.exceptions import HTTPError as Urllib3Error

    return (Urllib3Error, ConnectionError, TimeoutError)  # not every OSError: a full disk is no network hiccup


_URLLIB3_ERRORS = _urllib3_errors()


def _raw_chunks(raw, chunk_bytes: int):
    """Yields what the socket has, as it comes. (requests' iter_content buffers up to a whole chunk, and a dropped
    connection then loses that buffer; read1 hands over every byte received, so the .part resumes exactly.)"""
    read = getattr(raw, "read1", None) or raw.read
    while data := read(chunk_bytes):
        yield data


def _is_html(resp) -> bool:
    return "text/html" in resp.headers.get("Content-Type", "")


def _content_range_start(value: str) -> int:
    m = re.match(r"bytes\s+(\d+)-", value)
    return int(m.group(1)) if m else -1


def gdrive_confirm_url(page: str, page_url: str, cookies: Mapping[str, str] | None = None) -> str | None:
    """The real download URL behind Google Drive's large-file warning page, or None.

    Current pages hold a form (id="download-form", action=drive.usercontent.google.com/download) whose hidden inputs
    (id, export, confirm, uuid) make the URL; older ones put confirm=<token> in a link or a download_warning cookie.
    """
    form = re.search(r"<form\b[^>]*\bid=[\"']download-form[\"'][^>]*>(.*?)</form>", page, re.S | re.I)
    if form:
        action = re.search(r"\baction=[\"']([^\"']+)[\"']", form.group(0), re.I)
        fields = []
        for tag in re.findall(r"<input\b[^>]*>", form.group(1), re.I):
            name = re.search(r"\bname=[\"']([^\"']+)[\"']", tag)
            value = re.search(r"\bvalue=[\"']([^\"']*)[\"']", tag)
            if name and re.search(r"\btype=[\"']hidden[\"']", tag, re.I):
                fields.append((name.group(1), html.unescape(value.group(1) if value else "")))
        if action:
            target = urllib.parse.urljoin(page_url, html.unescape(action.group(1)))
            return f"{target}?{urllib.parse.urlencode(fields)}"
    token = re.search(r"confirm=([0-9A-Za-z_-]+)", page)
    if token is None:
        token = next((re.match(r"(.+)", v) for k, v in (cookies or {}).items() if k.startswith("download_warning")),
                     None)
    if token is None:
        return None
    return _with_query(page_url, "confirm", token.group(1))


def _with_query(url: str, key: str, value: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != key] + [(key, value)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


# ------------------------------------------------------------------------------------------------ verification
def file_digest(path: Path, algorithm: str = "sha256", chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def verification_problem(path: Path, f: FileSpec) -> str | None:
    """None when the file matches the manifest's size / sha256 / sha1 (those that are known), else what differs."""
    size = path.stat().st_size
    if f.size and size != f.size:
        return f"size {size} bytes, expected {f.size}"
    for algorithm, expected in (("sha256", f.sha256), ("sha1", f.sha1)):
        if expected and (got := file_digest(path, algorithm)) != expected:
            return f"{algorithm} {got}, expected {expected}"
    return None


def _accept_file(part: Path, dest: Path, f: FileSpec, label: str, url: str) -> None:
    """Verifies `part` and moves it to `dest`; a mismatch keeps it as <dest>.bad and raises ChecksumMismatch."""
    problem = verification_problem(part, f)
    if problem:
        bad = dest.with_name(dest.name + ".bad")
        os.replace(part, bad)
        raise ChecksumMismatch(f"{label}: the file from {url} failed verification ({problem}); "
                               f"kept as {bad} for inspection (delete it), not installed")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, dest)


# ------------------------------------------------------------------------------------------------ archives
def extract_member(archive: Path, member: str, out: Path) -> None:
    """Copies one member of a zip or tar (matched whole, or as the part after a '/') to `out`."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            name = _match_member([n for n in zf.namelist() if not n.endswith("/")], member, archive)
            with zf.open(name) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        return
    if _is_tar(archive):
        with tarfile.open(archive) as tf:
            files = {m.name: m for m in tf.getmembers() if m.isfile()}
            src = tf.extractfile(files[_match_member(list(files), member, archive)])
            with src, open(out, "wb") as dst:  # type: ignore[union-attr]
                shutil.copyfileobj(src, dst, 1 << 20)
        return
    raise DownloadError(f"{archive} is neither a zip nor a tar archive")


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _match_member(names: list[str], member: str, archive: Path) -> str:
    wanted = member.lstrip("./")
    exact = [n for n in names if n.lstrip("./") == wanted]
    found = exact or [n for n in names if n.endswith("/" + wanted)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise DownloadError(f"{member!r} is not in {archive.name} (it holds {len(names)} files, e.g. {names[:4]})")
    raise DownloadError(f"{member!r} is ambiguous in {archive.name}: {found[:4]}")


# ------------------------------------------------------------------------------------------------ one model
class _ModelDownloader:
    """Fetches the files of one manifest entry; archives are fetched once per run and shared between files."""

    def __init__(self, cfg: AvatarConfig, fetcher: _Fetcher, bases: Mapping[str, str], opts: DownloadOptions,
                 log: Callable[[str], None]):
        self.cfg, self.fetcher, self.bases, self.opts, self.log = cfg, fetcher, bases, opts, log
        self.cache_dir = Path(cfg.weights_dir).expanduser() / ".downloads"
        self.archives: dict[str, Path] = {}  # url -> downloaded archive

    def todo(self, e: Entry) -> list[FileSpec]:
        """The files of e to fetch: missing, or (with verify_existing) failing their size/hash check."""
        return [f for f in e.files if (self.opts.include_optional or not f.optional)
                and not self._in_place(mf.file_path(self.cfg, e, f), f, e)]

    def run(self, e: Entry, todo: list[FileSpec]) -> ModelResult:
        result = ModelResult(e.name, "ready", str(mf.target(self.cfg, e)))
        for f in todo:
            dest = mf.file_path(self.cfg, e, f)
            try:
                result.bytes_downloaded += self._fetch_file(e, f, dest)
                result.files.append(str(dest))
            except DownloadError as err:
                (result.warnings if f.optional else result.errors).append(str(err))
        result.status = "failed" if result.errors else ("downloaded" if result.files else "ready")
        if not result.errors and not self.opts.keep_archives:
            self._drop_archives()
        return result

    def _in_place(self, dest: Path, f: FileSpec, e: Entry) -> bool:
        if not mf.file_present(dest, f):
            return False
        if self.opts.verify_existing and (problem := verification_problem(dest, f)):
            self.log(f"    {e.name}: {dest} is in place but fails verification ({problem}): downloading again")
            return False
        return True

    def _fetch_file(self, e: Entry, f: FileSpec, dest: Path) -> int:
        label = f"{e.name}/{f.path}"
        if not f.sources:
            raise DownloadError(f"{label}: the manifest lists no source; put the file at {dest} yourself")
        errors = []
        for src in f.sources:
            url = source_url(src, self.bases)
            try:
                return self._from_source(src, url, f, dest, label)
            except DownloadError as err:
                errors.append(str(err))
                if len(f.sources) > 1:
                    self.log(f"    {err}")
        if len(errors) == 1:
            raise DownloadError(errors[0])
        raise DownloadError(f"{label}: every source failed:\n        " + "\n        ".join(errors))

    def _from_source(self, src: Source, url: str, f: FileSpec, dest: Path, label: str) -> int:
        part = dest.with_name(dest.name + ".part")
        self.log(f"    {label} <- {url}")
        if not src.member:
            received = self.fetcher.fetch(url, part, src.kind, label)
            _accept_file(part, dest, f, label, url)
            return received
        archive, received = self._archive(src, url, label)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            extract_member(archive, src.member, part)
        except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as err:
            raise DownloadError(f"{label}: cannot read {archive} ({err}); delete it to download again") from None
        _accept_file(part, dest, f, label, f"{url} [{src.member}]")
        return received

    def _archive(self, src: Source, url: str, label: str) -> tuple[Path, int]:
        if url in self.archives:
            return self.archives[url], 0
        path = self.cache_dir / src.download_name()
        received = 0
        if not path.is_file():
            part = path.with_name(path.name + ".part")
            received = self.fetcher.fetch(url, part, src.kind, f"{label} (archive {path.name})")
            os.replace(part, path)
        self.archives[url] = path
        return path, received

    def _drop_archives(self) -> None:
        for path in self.archives.values():
            path.unlink(missing_ok=True)
        self.archives.clear()


# ------------------------------------------------------------------------------------------------ entry points
def download(names: Iterable[str], cfg: AvatarConfig, *, yes: bool = False, options: DownloadOptions | None = None,
             manifest: Manifest | None = None, log: Callable[[str], None] = print,
             ask: Callable[[str], str] = input) -> DownloadSummary:
    """Downloads the named models (model names, stage names or "all"; empty = all) into the config's paths.

    yes=True accepts licences that need explicit acceptance (EAT: non-commercial; ChatGLM2). Without it such a model
    is asked about on a terminal, and skipped otherwise. Per-model failures are collected in the summary, not raised.
    """
    opts = options or DownloadOptions()
    if yes and not opts.accept_licences:
        opts = dataclasses.replace(opts, accept_licences=True)
    m = manifest or mf.default_manifest()
    selected = m.select(list(names) or ["all"])
    bases = resolve_bases(opts.base_urls)
    fetcher = _Fetcher(opts, log)
    results = []
    for e in selected:
        log(describe_entry(cfg, e, bases))
        downloader = _ModelDownloader(cfg, fetcher, bases, opts, log)
        todo = downloader.todo(e)  # the same rule decides what is fetched and whether to ask about the licence
        if todo and not _licence_accepted(e, opts, log, ask):
            results.append(ModelResult(e.name, "skipped", str(mf.target(cfg, e)), errors=[
                "licence not accepted: read it, then run again with --yes (or answer 'yes' on a terminal)"]))
            continue
        results.append(downloader.run(e, todo))
    summary = DownloadSummary(str(cfg.weights_dir), results)
    log(summary.format())
    return summary


def _licence_accepted(e: Entry, opts: DownloadOptions, log: Callable[[str], None], ask: Callable[[str], str]) -> bool:
    if not e.accept_required:
        return True
    if opts.accept_licences:
        log(f"    licence of {e.name} accepted (--yes / --accept-licences)")
        return True
    interactive = sys.stdin.isatty() if opts.interactive is None else opts.interactive
    if not interactive:
        log(f"    {e.name} needs explicit licence acceptance: skipped (use --yes to accept)")
        return False
    answer = ask(f"    Do you accept the licence of {e.name} ({e.licence_url or e.licence})? [yes/No] ")
    return answer.strip().lower() in ("y", "yes")


def describe_entry(cfg: AvatarConfig, e: Entry, bases: Mapping[str, str]) -> str:
    """Model, target, licence and sources, printed before anything is downloaded."""
    size = _size_text(e)
    sources = sorted({source_url(s, bases)
                      for f in e.files for s in f.sources[:1]})
    lines = [f"== {e.name} ({e.stage}/{e.backend}): {e.description}",
             f"   target:  {mf.target(cfg, e)}  ({len(e.files)} files, {size})",
             f"   licence: {e.licence}" + (f"  <{e.licence_url}>" if e.licence_url else "")
             + ("  [needs your acceptance]" if e.accept_required else "")]
    lines += [f"   source:  {s}" for s in sources[:6]] + ([f"   ... and {len(sources) - 6} more"] if len(sources) > 6 else [])
    if e.unconfirmed:
        lines.append(f"   note:    {e.unconfirmed}")
    return "\n".join(lines)


def format_listing(cfg: AvatarConfig, manifest: Manifest | None = None) -> str:
    """The manifest as a table: name, stage, need, status here, size, licence, target."""
    m = manifest or mf.default_manifest()
    rows = [f"{'model':<22} {'stage':<8} {'need':<9} {'status':<11} {'size':>9}  {'target':<48} licence"]
    for e in m.entries:
        missing = mf.missing_files(cfg, e.name, m)
        status = "ready" if not missing else f"missing {len(missing)}"
        licence = e.licence.split(" (")[0].split(":")[0] + (" [accept]" if e.accept_required else "")
        rows.append(f"{e.name:<22} {e.stage:<8} {e.need:<9} {status:<11} {_mb(e.approx_bytes()) + ('' if e.size_known() or not e.approx_bytes() else '+'):>9}  "
                    f"{str(mf.target(cfg, e)):<48} {licence}")
    rows.append("size: '+' = some file sizes are not published (the total is a lower bound)")
    return "\n".join(rows)


def _size_text(e: Entry) -> str:
    known = _mb(e.approx_bytes())
    if e.size_known():
        return f"about {known}"
    return f"{known} + files of unpublished size" if e.approx_bytes() else "size not published"


def _mb(n: int) -> str:
    if not n:
        return "?"
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def main_download(cfg: AvatarConfig, names: Iterable[str] = (), accept: bool = False, list_only: bool = False,
                  options: DownloadOptions | None = None) -> int:
    """The CLI's `download` command: 0 when every selected model is ready, else 1."""
    if list_only:
        print(format_listing(cfg))
        return 0
    try:
        summary = download(list(names), cfg, yes=accept, options=options)
    except AvatarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if summary.ok else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="download_models.py", description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="models, stages (asr tts chat head matting enhance) or 'all' (default)")
    p.add_argument("--config", help="an AvatarConfig TOML file (its paths decide where files go)")
    p.add_argument("--weights-dir", help="override weights_dir")
    p.add_argument("--yes", "--accept-licences", dest="yes", action="store_true",
                   help="accept the licences that need explicit acceptance (EAT non-commercial, ChatGLM2)")
    p.add_argument("--list", action="store_true", help="list the models, their status and licences, then exit")
    p.add_argument("--verify", action="store_true", help="re-hash files already in place")
    p.add_argument("--keep-archives", action="store_true", help="keep downloaded zips in <weights_dir>/.downloads")
    p.add_argument("--skip-optional", action="store_true", help="do not fetch optional files")
    p.add_argument("--mirror", help=f"base URL for every source (same as {MIRROR_ENV})")
    p.add_argument("--retries", type=int, default=4)
    p.add_argument("--no-progress", action="store_true")
    return p


def cli(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = AvatarConfig.load(args.config)
    if args.weights_dir:
        cfg = cfg.replace(weights_dir=args.weights_dir)
    if args.mirror:
        os.environ[MIRROR_ENV] = args.mirror
    opts = DownloadOptions(accept_licences=args.yes, retries=args.retries, progress=not args.no_progress,
                           keep_archives=args.keep_archives, include_optional=not args.skip_optional,
                           verify_existing=args.verify)
    return main_download(cfg, args.names, accept=args.yes, list_only=args.list, options=opts)
