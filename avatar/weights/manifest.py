"""What the original design's backends need: avatar/weights/models.toml, loaded once, as small frozen dataclasses.

The doctor and the downloader ask this module ("which files, where, what size"). Stage loaders only check that
their files exist (head/eat/runtime.missing_eat_files, ...) and then load them strictly, so weights of other sizes (a
fine-tune, the tests' synthetic checkpoints) still load; tests/weights/test_manifest.py keeps both file lists equal:

    from avatar.weights import manifest
    manifest.missing_files(cfg, "gfpgan")   # [] when ready; else the exact paths that are absent
    manifest.is_ready(cfg, "eat")
    manifest.stage_ready(cfg, "head")       # every required entry ready (and one "any" entry, if the stage has some)

Targets come from the config field named by each entry ("head.eat_dir", "enhance.gfpgan_path", ...), resolved with
AvatarConfig.weights_path, so a path the user changed in the config is where files are looked for and downloaded to.
"""
from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from avatar.core.config import AvatarConfig
from avatar.core.errors import AvatarError

MANIFEST_PATH = Path(__file__).with_name("models.toml")
SOURCE_KINDS = ("url", "hf", "modelscope", "github_release", "github_raw", "gdrive")
NEEDS = ("required", "any", "optional")


@dataclass(frozen=True)
class Source:
    kind: str  # one of SOURCE_KINDS
    ref: str  # url / repo id / Google Drive file id
    revision: str = ""  # hf / modelscope / github_raw: branch, tag or commit
    file: str = ""  # hf / modelscope / github_raw: path inside the repository
    tag: str = ""  # github_release
    asset: str = ""  # github_release
    member: str = ""  # non-empty: the downloaded file is a zip/tar and this member is the wanted file
    archive: str = ""  # file name to store a downloaded archive under (gdrive ids have no name)

    def download_name(self) -> str:
        """A file name for the downloaded object (the archive itself when `member` is set)."""
        if self.archive:
            return self.archive
        name = {"github_release": self.asset, "gdrive": self.ref}.get(self.kind) or self.file or self.ref
        return name.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "download"


@dataclass(frozen=True)
class FileSpec:
    path: str  # relative to the entry's target folder (kind "dir")
    size: int = 0  # bytes; 0 = unknown
    sha256: str = ""
    sha1: str = ""
    optional: bool = False  # downloaded, but not needed for "ready"
    approx_mb: float = 0.0  # shown before downloading when `size` is unknown
    sources: tuple[Source, ...] = ()


@dataclass(frozen=True)
class Entry:
    name: str
    stage: str
    backend: str
    need: str  # required | any | optional
    description: str
    config_field: str  # "section.field" of AvatarConfig
    kind: str  # dir | file
    files: tuple[FileSpec, ...]
    licence: str
    licence_url: str = ""
    accept_required: bool = False
    homepage: str = ""
    default_path: str = ""
    subdir: str = ""
    unconfirmed: str = ""

    def approx_bytes(self) -> int:
        return sum(f.size or int(f.approx_mb * 1e6) for f in self.files)

    def size_known(self) -> bool:
        """False when some file has neither an exact nor an approximate size (approx_bytes is then a lower bound)."""
        return all(f.size or f.approx_mb for f in self.files)


@dataclass(frozen=True)
class Manifest:
    entries: tuple[Entry, ...]

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        entries = tuple(_parse_entry(m) for m in data.get("model", []))
        names = [e.name for e in entries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise AvatarError(f"model manifest: duplicate names {dupes}")
        return cls(entries)

    @classmethod
    def load(cls, path: str | Path = MANIFEST_PATH) -> "Manifest":
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise AvatarError(f"cannot read the model manifest {path}: {e}") from None
        return cls.from_dict(data)

    def entry(self, name: str) -> Entry:
        for e in self.entries:
            if e.name == name:
                return e
        raise AvatarError(f"unknown model {name!r}; known: {', '.join(e.name for e in self.entries)}")

    def for_stage(self, stage: str) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.stage == stage)

    def select(self, names: Iterable[str]) -> list[Entry]:
        """Model names, stage names (e.g. "head") or "all" -> entries, manifest order, no repeats."""
        wanted: set[str] = set()
        for n in names:
            if n == "all":
                wanted.update(e.name for e in self.entries)
            elif any(e.stage == n for e in self.entries) and not any(e.name == n for e in self.entries):
                wanted.update(e.name for e in self.for_stage(n))
            else:
                wanted.add(self.entry(n).name)
        return [e for e in self.entries if e.name in wanted]


def _parse_entry(m: dict) -> Entry:
    try:
        files = tuple(_parse_file(f, m["name"]) for f in m.get("file", []))
        entry = Entry(
            name=m["name"], stage=m["stage"], backend=m["backend"], need=m.get("need", "required"),
            description=m.get("description", ""), config_field=m["config_field"], kind=m.get("kind", "dir"),
            files=files, licence=m["licence"], licence_url=m.get("licence_url", ""),
            accept_required=bool(m.get("accept_required", False)), homepage=m.get("homepage", ""),
            default_path=m.get("default_path", ""), subdir=m.get("subdir", ""), unconfirmed=m.get("unconfirmed", ""))
    except KeyError as e:
        raise AvatarError(f"model manifest: entry {m.get('name', '?')!r} lacks the key {e}") from None
    if entry.need not in NEEDS or entry.kind not in ("dir", "file"):
        raise AvatarError(f"model manifest: entry {entry.name!r} has need={entry.need!r} kind={entry.kind!r}")
    if entry.kind == "file" and len(files) != 1:
        raise AvatarError(f"model manifest: entry {entry.name!r} has kind 'file' but {len(files)} files")
    return entry


def _parse_file(f: dict, model: str) -> FileSpec:
    sources = tuple(_parse_source(s, model, f.get("path", "?")) for s in f.get("sources", []))
    return FileSpec(path=f["path"], size=int(f.get("size", 0)), sha256=f.get("sha256", "").lower(),
                    sha1=f.get("sha1", "").lower(), optional=bool(f.get("optional", False)),
                    approx_mb=float(f.get("approx_mb", 0.0)), sources=sources)


def _parse_source(s: dict, model: str, path: str) -> Source:
    kinds = [k for k in SOURCE_KINDS if k in s]
    if len(kinds) != 1:
        raise AvatarError(f"model manifest: {model}/{path}: a source needs exactly one of {SOURCE_KINDS}, got {s}")
    kind = kinds[0]
    return Source(kind=kind, ref=str(s[kind]), revision=s.get("revision", ""), file=s.get("file", ""),
                  tag=s.get("tag", ""), asset=s.get("asset", ""), member=s.get("member", ""),
                  archive=s.get("archive", ""))


# ------------------------------------------------------------------------------------------- the packaged manifest
@functools.lru_cache(maxsize=1)
def default_manifest() -> Manifest:
    return Manifest.load(MANIFEST_PATH)


def _m(manifest: Manifest | None) -> Manifest:
    return manifest if manifest is not None else default_manifest()


def entries(manifest: Manifest | None = None) -> tuple[Entry, ...]:
    return _m(manifest).entries


def entry(name: str, manifest: Manifest | None = None) -> Entry:
    return _m(manifest).entry(name)


def config_value(cfg: AvatarConfig, dotted: str) -> Any:
    """cfg "section.field" -> its value; AvatarError when the config has no such field."""
    obj: Any = cfg
    for part in dotted.split("."):
        if not hasattr(obj, part):
            raise AvatarError(f"the config has no field {dotted!r}")
        obj = getattr(obj, part)
    return obj


def target(cfg: AvatarConfig, e: Entry) -> Path:
    """Where the entry lives: the folder (kind "dir", including `subdir`) or the file itself (kind "file")."""
    value = str(config_value(cfg, e.config_field) or e.default_path)
    if not value:
        raise AvatarError(f"{e.config_field} is empty and model {e.name!r} has no default path")
    base = cfg.weights_path(value)
    return base / e.subdir if (e.kind == "dir" and e.subdir) else base


def file_path(cfg: AvatarConfig, e: Entry, f: FileSpec) -> Path:
    return target(cfg, e) if e.kind == "file" else target(cfg, e) / f.path


def file_present(path: Path, f: FileSpec) -> bool:
    """Exists as a file, with the right size when the size is known (cheap; checksums are the downloader's job)."""
    try:
        return path.is_file() and (not f.size or path.stat().st_size == f.size)
    except OSError:
        return False


def missing_files(cfg: AvatarConfig, name: str, manifest: Manifest | None = None,
                  include_optional: bool = False) -> list[Path]:
    """Exact paths of the entry's files that are absent (or have the wrong size). [] = ready."""
    e = entry(name, manifest)
    return [p for f in e.files if include_optional or not f.optional
            if not file_present(p := file_path(cfg, e, f), f)]


def is_ready(cfg: AvatarConfig, name: str, manifest: Manifest | None = None) -> bool:
    return not missing_files(cfg, name, manifest)


def stage_ready(cfg: AvatarConfig, stage: str, manifest: Manifest | None = None) -> bool:
    """The stage's original backend has its weights: all "required" entries, and one "any" entry if there are any."""
    stage_entries = _m(manifest).for_stage(stage)
    if not stage_entries:
        return False
    required = [e for e in stage_entries if e.need == "required"]
    either = [e for e in stage_entries if e.need == "any"]
    return (all(is_ready(cfg, e.name, manifest) for e in required)
            and (not either or any(is_ready(cfg, e.name, manifest) for e in either)))
