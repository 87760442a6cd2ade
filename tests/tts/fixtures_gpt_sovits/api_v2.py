"""Stand-in for GPT-SoVITS api_v2.py: the documented HTTP contract on http.server, audio from the stand-in TTS.

    python api_v2.py -a 127.0.0.1 -p 9880 -c GPT_SoVITS/configs/tts_infer.yaml

GET/POST /tts (wav | raw, streaming_mode), GET /set_gpt_weights, GET /set_sovits_weights, GET /docs; errors are
HTTP 400 with a JSON body {"message": ..., "Exception": ...} as in the real server. `server.behaviour` lets a test
make it misbehave: "slow" (answers after server.delay_s), "fail" (400 "tts failed"), "cut" (closes the stream
early), "odd" (an odd number of PCM bytes), "html" (200 with a web page instead of audio).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
import time
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import soundfile as sf  # noqa: E402

from GPT_SoVITS.TTS_infer_pack.TTS import TTS, TTS_Config  # noqa: E402

REQUIRED = ("ref_audio_path", "text", "text_lang", "prompt_lang")


def wav_header(sample_rate: int) -> bytes:
    """What api_v2 sends first in streaming wav mode: a header for zero frames, then raw int16 chunks follow."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(b"")
    return buf.getvalue()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked streaming, like uvicorn

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        url = urlparse(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.server.calls.append(("GET", url.path, params))
        if url.path == "/docs":
            return self._send(200, b"<html>stand-in GPT-SoVITS</html>", "text/html")
        if url.path in ("/set_gpt_weights", "/set_sovits_weights"):
            return self._set_weights(url.path, params.get("weights_path", ""))
        if url.path == "/tts":
            return self._tts(params)
        self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        url = urlparse(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        params = json.loads(body or b"{}")
        self.server.calls.append(("POST", url.path, params))
        if url.path == "/tts":
            return self._tts(params)
        self._json(405, {"detail": "Method Not Allowed"})

    # ---------------------------------------------------------------- routes
    def _set_weights(self, route: str, path: str) -> None:
        pipeline = self.server.pipeline
        try:
            if not path:
                return self._json(400, {"message": "weight path is required"})
            (pipeline.init_t2s_weights if route == "/set_gpt_weights" else pipeline.init_vits_weights)(path)
        except Exception as e:
            return self._json(400, {"message": "change weight failed", "Exception": str(e)})
        self._json(200, {"message": "success"})

    def _tts(self, req: dict) -> None:
        missing = [k for k in REQUIRED if not req.get(k)]
        if missing:
            return self._json(400, {"message": f"{missing[0]} is required"})
        media_type = req.get("media_type", "wav")
        if media_type not in ("wav", "raw", "ogg", "aac"):
            return self._json(400, {"message": f"media_type: {media_type} is not supported"})
        streaming = str(req.get("streaming_mode", False)).lower() in ("true", "1", "2", "3")
        behaviour = self.server.behaviour
        if behaviour == "slow":
            time.sleep(self.server.delay_s)
        if behaviour == "fail":
            return self._json(400, {"message": "tts failed", "Exception": "CUDA out of memory"})
        if behaviour == "html":
            return self._send(200, b"<html>proxy error page</html>", "text/html")
        try:
            results = list(self.server.pipeline.run({**req, "return_fragment": streaming}))
        except Exception as e:
            return self._json(400, {"message": "tts failed", "Exception": str(e)})
        if streaming:
            return self._stream(results, media_type)
        rate, audio = results[0]
        if media_type == "wav":
            buf = io.BytesIO()
            sf.write(buf, audio, rate, format="wav")
            data = buf.getvalue()
        else:
            data = audio.tobytes()
        if behaviour == "cut":  # promise the whole file, send half, hang up
            return self._send(200, data[: len(data) // 2], f"audio/{media_type}", length=len(data))
        if behaviour == "odd":
            data = data[:-1]
        self._send(200, data, f"audio/{media_type}")

    def _stream(self, results: list, media_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"audio/{media_type}")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunks = ([wav_header(results[0][0])] if media_type == "wav" else []) + [a.tobytes() for _, a in results]
        for i, chunk in enumerate(chunks):
            if self.server.behaviour == "cut" and i == len(chunks) - 1:
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk[: len(chunk) // 3])
                self.wfile.flush()
                self.close_connection = True
                return  # no terminating chunk: the client sees a broken stream
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    # ---------------------------------------------------------------- helpers
    def _json(self, status: int, body: dict) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, data: bytes, content_type: str, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()
        self.wfile.write(data)
        if length is not None:
            self.close_connection = True


def make_server(host: str, port: int, config_path: str) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.pipeline = TTS(TTS_Config(config_path))
    server.calls, server.behaviour, server.delay_s = [], "ok", 0.0
    return server


def serve_in_thread(config_path: str) -> ThreadingHTTPServer:
    """A running server on a free 127.0.0.1 port (server.server_address); stop with shutdown() + server_close()."""
    server = make_server("127.0.0.1", 0, config_path)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="stand-in GPT-SoVITS api_v2")
    parser.add_argument("-a", "--bind_addr", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=9880)
    parser.add_argument("-c", "--tts_config", default="GPT_SoVITS/configs/tts_infer.yaml")
    args = parser.parse_args()
    make_server(args.bind_addr, args.port, args.tts_config).serve_forever()
