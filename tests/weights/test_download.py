"""The downloader against a local HTTP server (127.0.0.1, Range support) serving small generated files.

The real manifest entries are used with their real file names and URL layout; only sizes/checksums are replaced by
those of the generated files, and every source kind is pointed at the local server.
"""
from __future__ import annotations

import copy
import hashlib
import io
import tarfile
import threading
import tomllib
import urllib.parse
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from avatar.weights import manifest as mf
from avatar.core.config import AvatarConfig
from avatar.weights.doctor import doctor_report, format_report
from avatar.weights.download import DownloadOptions, download, gdrive_confirm_url, resolve_bases, source_url
from avatar.weights.manifest import Manifest, Source


# ------------------------------------------------------------------------------------------------ local server
@dataclass
class Route:
    data: bytes
    content_type: str = "application/octet-stream"
    drop_after: int = 0  # >0: the first request sends only this many bytes, then closes the connection


@dataclass
class Server:
    base: str
    routes: dict = field(default_factory=dict)  # (path, sorted query) -> Route
    log: list = field(default_factory=list)  # (path?query, Range header or None)

    def add(self, url: str, route: Route) -> None:
        self.routes[_key(url)] = route

    def requests_for(self, url: str) -> list:
        return [rng for key, rng in self.log if key == _key(url)]


def _key(url: str):
    parts = urllib.parse.urlsplit(url)
    return parts.path, tuple(sorted(urllib.parse.parse_qsl(parts.query)))


def _handler(server: Server):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_GET(self):
            key = _key(self.path)
            server.log.append((key, self.headers.get("Range")))
            route = server.routes.get(key)
            if route is None:
                self.send_error(404)
                return
            data, start = route.data, 0
            rng = self.headers.get("Range")
            if rng:
                start = int(rng.split("=")[1].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Type", route.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if route.drop_after:
                self.wfile.write(body[:route.drop_after])
                route.drop_after = 0
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture()
def server():
    srv = Server("")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(srv))
    srv.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield srv
    httpd.shutdown()
    httpd.server_close()


def bases_for(srv: Server) -> dict:
    return {kind: f"{srv.base}/{kind}" for kind in mf.SOURCE_KINDS}


def options(srv: Server, **kw) -> DownloadOptions:
    return DownloadOptions(base_urls=bases_for(srv), retries=kw.pop("retries", 2), backoff_s=0.01, timeout_s=10,
                           progress=False, **kw)


# ------------------------------------------------------------------------------------------------ test manifest
def blob(seed: int, n: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_manifest(names: list[str], blobs: dict, source_index: dict | None = None) -> Manifest:
    """The real entries `names` with sizes/checksums of the generated blobs ((model, path) -> bytes)."""
    raw = tomllib.loads(mf.MANIFEST_PATH.read_text(encoding="utf-8"))
    models = [copy.deepcopy(m) for m in raw["model"] if m["name"] in names]
    for m in models:
        for f in m["file"]:
            data = blobs[(m["name"], f["path"])]
            f["size"], f["sha256"] = len(data), hashlib.sha256(data).hexdigest()
            if f.get("sha1"):
                f["sha1"] = hashlib.sha1(data).hexdigest()
    return Manifest.from_dict({"schema": 1, "model": models})


test_manifest.__test__ = False  # a helper, not a test


def serve_manifest(srv: Server, m: Manifest, blobs: dict, source_index: dict | None = None) -> None:
    """Publishes every file on the local server at the URL its source (first, or source_index[name]) resolves to."""
    archives: dict[str, tuple[Source, dict]] = {}
    bases = bases_for(srv)
    for e in m.entries:
        for f in e.files:
            src = f.sources[(source_index or {}).get(e.name, 0)]
            url, data = source_url(src, bases), blobs[(e.name, f.path)]
            if src.member:
                archives.setdefault(url, (src, {}))[1][src.member] = data
            else:
                publish(srv, src, url, data)
    for url, (src, members) in archives.items():
        publish(srv, src, url, make_archive(src.download_name(), members))


def publish(srv: Server, src: Source, url: str, data: bytes) -> None:
    if src.kind != "gdrive":
        srv.add(url, Route(data))
        return
    # Google Drive: the first answer is the virus-scan warning page; its form leads to the file.
    confirm = f"{srv.base}/gdrive-usercontent/download"
    page = (f'<html><body><form id="download-form" action="{confirm}" method="get">'
            f'<input type="submit" value="Download anyway"/>'
            f'<input type="hidden" name="id" value="{src.ref}"><input type="hidden" name="export" value="download">'
            f'<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-{src.ref[:4]}">'
            f"</form></body></html>").encode()
    srv.add(url, Route(page, content_type="text/html; charset=utf-8"))
    srv.add(f"{confirm}?id={src.ref}&export=download&confirm=t&uuid=u-{src.ref[:4]}", Route(data))


def make_archive(name: str, members: dict) -> bytes:
    buf = io.BytesIO()
    if name.endswith(".zip"):
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("README.txt", "not extracted")
            for member, data in members.items():  # members under a top folder: matched by their trailing part
                zf.writestr(member if "/" in member else f"top/{member}", data)
    else:
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            for member, data in members.items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def blobs_for(names: list[str], seed: int = 0, size: int = 3000) -> dict:
    out = {}
    for i, e in enumerate(e for e in mf.entries() if e.name in names):
        for j, f in enumerate(e.files):
            out[(e.name, f.path)] = blob(seed + 100 * i + j, size + 37 * j)
    return out


# ------------------------------------------------------------------------------------------------ tests
def test_real_entries_download_unpack_verify_and_doctor_reports_ready(server, tmp_path):
    names = ["eat", "deepspeech", "gfpgan", "modnet"]
    blobs = blobs_for(names)
    m = test_manifest(names, blobs)
    serve_manifest(server, m, blobs)
    cfg = AvatarConfig(weights_dir=str(tmp_path / "w")).replace(**{"enhance.gfpgan_path": "faces/v14.pth"})
    log: list[str] = []
    summary = download([], cfg, yes=True, options=options(server), manifest=m, log=log.append)

    assert summary.ok, summary.format()
    assert {r.name: r.status for r in summary.results} == dict.fromkeys(names, "downloaded")
    w = tmp_path / "w"
    assert (w / "faces/v14.pth").read_bytes() == blobs[("gfpgan", "GFPGANv1.4.pth")]  # the user's path
    for path in ("ckpt/deepprompt_eam3d_all_final_313.pth.tar", "pad.npy", "demo/M003_template.npy",
                 "deepspeech-0_1_0-b90017e8.pb"):
        model = "deepspeech" if path.startswith("deepspeech") else "eat"
        assert (w / "eat" / path).read_bytes() == blobs[(model, path)]
    assert not list(w.rglob("*.part")) and not list(w.rglob("*.bad"))
    assert not list((w / ".downloads").iterdir())  # archives removed after extraction
    assert any("CC BY-NC" in line for line in log) and any("accepted" in line for line in log)

    report = doctor_report(cfg, manifest=m, probe_servers=False)
    assert report["original_ready"]["head"] and report["original_ready"]["enhance"] and report["original_ready"]["matting"]
    assert report["stages"]["enhance"]["backend"] == "gfpgan"
    assert report["stages"]["matting"]["backend"] == "modnet"
    assert report["stages"]["head"]["backend"] == "eat"
    assert all(not e["missing"] for s in ("head", "enhance", "matting") for e in report["stages"][s]["models"])
    assert "eat" in format_report(report)

    again = download(["head"], cfg, options=options(server), manifest=m, log=log.append)
    assert [r.status for r in again.results] == ["ready", "ready"]  # nothing fetched twice


def test_partial_file_is_resumed_with_a_range_request(server, tmp_path):
    blobs = {("gfpgan", "GFPGANv1.4.pth"): blob(1, 300_000)}
    m = test_manifest(["gfpgan"], blobs)
    serve_manifest(server, m, blobs)
    cfg = AvatarConfig(weights_dir=str(tmp_path))
    dest = mf.file_path(cfg, m.entry("gfpgan"), m.entry("gfpgan").files[0])
    dest.parent.mkdir(parents=True)
    dest.with_name(dest.name + ".part").write_bytes(blobs[("gfpgan", "GFPGANv1.4.pth")][:120_000])

    summary = download(["gfpgan"], cfg, options=options(server), manifest=m, log=lambda s: None)
    assert summary.ok, summary.format()
    url = source_url(m.entry("gfpgan").files[0].sources[0], bases_for(server))
    assert server.requests_for(url) == ["bytes=120000-"]
    assert summary.results[0].bytes_downloaded == 180_000
    assert dest.read_bytes() == blobs[("gfpgan", "GFPGANv1.4.pth")]


def test_dropped_connection_is_retried_and_resumed(server, tmp_path):
    blobs = {("modnet", "modnet_photographic_portrait_matting.onnx"): blob(2, 200_000)}
    m = test_manifest(["modnet"], blobs)
    serve_manifest(server, m, blobs, source_index={"modnet": 1})  # the Hugging Face mirror; the Drive id is absent
    hf_url = source_url(m.entry("modnet").files[0].sources[1], bases_for(server))
    server.routes[_key(hf_url)].drop_after = 50_000
    cfg = AvatarConfig(weights_dir=str(tmp_path))
    summary = download(["modnet"], cfg, options=options(server), manifest=m, log=lambda s: None)

    assert summary.ok, summary.format()
    assert server.requests_for(hf_url) == [None, "bytes=50000-"]
    assert summary.results[0].bytes_downloaded == 200_000  # each byte fetched once
    assert mf.is_ready(cfg, "modnet", m)


def test_wrong_checksum_is_an_error_and_the_file_is_not_installed(server, tmp_path):
    blobs = {("gfpgan", "GFPGANv1.4.pth"): blob(3, 5000)}
    m = test_manifest(["gfpgan"], blobs)
    serve_manifest(server, m, {("gfpgan", "GFPGANv1.4.pth"): blob(4, 5000)})  # same size, other bytes
    cfg = AvatarConfig(weights_dir=str(tmp_path))
    summary = download(["gfpgan"], cfg, options=options(server), manifest=m, log=lambda s: None)

    assert not summary.ok and summary.results[0].status == "failed"
    error = summary.results[0].errors[0]
    assert "sha256" in error and "expected" in error and ".bad" in error
    dest = tmp_path / "gfpgan/GFPGANv1.4.pth"
    assert not dest.exists() and dest.with_name(dest.name + ".bad").exists()
    assert not mf.is_ready(cfg, "gfpgan", m)
    assert doctor_report(cfg, manifest=m, probe_servers=False)["stages"]["enhance"]["backend"] == "off"


def test_404_names_the_url_and_the_model(server, tmp_path):
    blobs = {("gfpgan", "GFPGANv1.4.pth"): blob(5, 1000)}
    m = test_manifest(["gfpgan"], blobs)  # nothing published
    cfg = AvatarConfig(weights_dir=str(tmp_path))
    summary = download(["gfpgan"], cfg, options=options(server), manifest=m, log=lambda s: None)

    error = summary.results[0].errors[0]
    url = source_url(m.entry("gfpgan").files[0].sources[0], bases_for(server))
    assert "HTTP 404" in error and url in error and "gfpgan" in error
    assert len(server.requests_for(url)) == 1  # a 404 is not retried
    assert not (tmp_path / "gfpgan").exists() or not list((tmp_path / "gfpgan").iterdir())


def test_second_source_and_tar_member_when_the_first_is_missing(server, tmp_path):
    blobs = blobs_for(["deepspeech"], seed=9)
    m = test_manifest(["deepspeech"], blobs)
    serve_manifest(server, m, blobs, source_index={"deepspeech": 1})  # Mozilla's tar.gz; osmr's zip is a 404
    cfg = AvatarConfig(weights_dir=str(tmp_path))
    summary = download(["deepspeech"], cfg, options=options(server), manifest=m, log=lambda s: None)
    assert summary.ok, summary.format()
    assert (tmp_path / "eat/deepspeech-0_1_0-b90017e8.pb").read_bytes() == blobs[("deepspeech",
                                                                                 "deepspeech-0_1_0-b90017e8.pb")]


def test_non_commercial_licence_needs_acceptance(server, tmp_path):
    blobs = blobs_for(["eat"], seed=11)
    m = test_manifest(["eat"], blobs)
    serve_manifest(server, m, blobs)
    cfg = AvatarConfig(weights_dir=str(tmp_path))
    refused = download(["eat"], cfg, options=options(server, interactive=False), manifest=m, log=lambda s: None)
    assert refused.results[0].status == "skipped" and "licence" in refused.results[0].errors[0]
    assert server.log == []  # nothing was requested

    asked: list[str] = []
    accepted = download(["eat"], cfg, options=options(server, interactive=True), manifest=m, log=lambda s: None,
                        ask=lambda prompt: asked.append(prompt) or "yes")
    assert accepted.ok and asked and "eat" in asked[0]
    assert mf.is_ready(cfg, "eat", m)

    # a file of the right size but the wrong bytes, re-verified: fetching it again still needs the licence
    target = next(p for p in sorted(tmp_path.rglob("*")) if p.is_file() and p.stat().st_size > 16
                  and ".downloads" not in p.parts)
    target.write_bytes(bytes(b ^ 0xFF for b in target.read_bytes()))
    server.log.clear()
    again = download(["eat"], cfg, options=options(server, interactive=False, verify_existing=True), manifest=m,
                     log=lambda s: None)
    assert again.results[0].status == "skipped" and "licence" in again.results[0].errors[0]
    assert server.log == []


def test_source_urls_of_real_entries():
    bases = resolve_bases({})
    hf = Source("hf", "lj1995/GPT-SoVITS", revision="main",
                file="gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt")
    assert source_url(hf, bases) == ("https://huggingface.co/lj1995/GPT-SoVITS/resolve/main/gsv-v2final-pretrained/"
                                     "s1bert25hz-5kh-longer-epoch%3D12-step%3D369668.ckpt")
    ms = Source("modelscope", "iic/speech_fsmn_vad_zh-cn-16k-common-pytorch", revision="master", file="am.mvn")
    assert source_url(ms, bases) == ("https://modelscope.cn/api/v1/models/iic/speech_fsmn_vad_zh-cn-16k-common-pytorch"
                                     "/repo?Revision=master&FilePath=am.mvn")
    gfp = mf.entry("gfpgan").files[0].sources[0]
    assert source_url(gfp, bases) == "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth"
    pad = {f.path: f for f in mf.entry("eat").files}["pad.npy"].sources[0]
    assert source_url(pad, bases) == ("https://raw.githubusercontent.com/yuangan/EAT_code/"
                                      "95beccbc9422cf57cf78e0570073831aed289d23/pad.npy")
    ckpt = mf.entry("eat").files[0].sources[0]
    assert source_url(ckpt, bases) == "https://drive.google.com/uc?export=download&id=1KK15n2fOdfLECWN5wvX54mVyDt18IZCo"


def test_mirror_env_points_every_kind_at_one_base(monkeypatch):
    monkeypatch.setenv("AVATAR_DOWNLOAD_MIRROR", "http://mirror.lan/weights/")
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com")
    bases = resolve_bases({"gdrive": "http://drive.lan"})
    assert bases["hf"] == "http://mirror.lan/weights/hf" and bases["gdrive"] == "http://drive.lan"
    url_src = Source("url", "https://dlib.net/files/x.dat.bz2")
    assert source_url(url_src, bases) == "http://mirror.lan/weights/url/dlib.net/files/x.dat.bz2"
    monkeypatch.delenv("AVATAR_DOWNLOAD_MIRROR")
    assert resolve_bases()["hf"] == "https://hf-mirror.com"


def test_gdrive_confirm_page_parsing():
    page = ('<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
            '<input type="hidden" name="id" value="ABC"><input type="hidden" name="export" value="download">'
            '<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="9f&amp;x"></form>')
    url = gdrive_confirm_url(page, "https://drive.google.com/uc?export=download&id=ABC")
    assert url == "https://drive.usercontent.google.com/download?id=ABC&export=download&confirm=t&uuid=9f%26x"
    old = '<a href="/uc?export=download&amp;confirm=Xy_z&amp;id=ABC">Download anyway</a>'
    assert gdrive_confirm_url(old, "https://drive.google.com/uc?export=download&id=ABC").endswith("confirm=Xy_z")
    assert gdrive_confirm_url("<html>Quota exceeded</html>", "https://drive.google.com/uc?id=ABC") is None


def test_an_optional_file_that_fails_is_a_warning_and_the_model_is_ready(server, tmp_path, capsys):
    from avatar.weights.download import main_download

    required, zipped = blob(21, 4000), make_archive("pack.zip", {"inside.bin": blob(22, 3000)})
    server.add(f"{server.base}/a.bin", Route(required))
    server.add(f"{server.base}/pack.zip", Route(zipped))
    m = Manifest.from_dict({"schema": 1, "model": [{
        "name": "demo", "stage": "head", "backend": "eat", "config_field": "head.eat_dir", "licence": "MIT",
        "file": [{"path": "a.bin", "sources": [{"url": f"{server.base}/a.bin"}]},
                 {"path": "inside.bin", "sources": [{"url": f"{server.base}/pack.zip", "member": "inside.bin"}]},
                 {"path": "extra.bin", "optional": True, "sources": [{"url": f"{server.base}/missing.bin"}]},
                 {"path": "extra2.bin", "optional": True,
                  "sources": [{"url": f"{server.base}/pack.zip", "member": "not-there.bin"}]}]}]})
    cfg = AvatarConfig(weights_dir=str(tmp_path))
    opts = DownloadOptions(retries=0, progress=False, timeout_s=10)
    summary = download(["demo"], cfg, options=opts, manifest=m, log=lambda s: None)

    result = summary.results[0]
    assert summary.ok and result.status == "downloaded" and result.errors == [], summary.format()
    assert len(result.warnings) == 2 and "HTTP 404" in result.warnings[0] and "not-there.bin" in result.warnings[1]
    assert "optional file not downloaded" in summary.format()
    assert (tmp_path / "eat/a.bin").read_bytes() == required and mf.is_ready(cfg, "demo", m)
    assert not list((tmp_path / ".downloads").iterdir())  # the archive is cleaned up: every required file is in

    (tmp_path / "eat/a.bin").unlink()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mf, "default_manifest", lambda: m)
        assert main_download(cfg, ["demo"], options=opts) == 0  # the CLI's exit status
