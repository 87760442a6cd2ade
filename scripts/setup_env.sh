#!/usr/bin/env bash
# Installs everything the app and the tests need on a fresh Debian machine: system packages (apt), a virtual
# environment with the pinned Python packages, and an `ffmpeg` link inside the venv (from imageio-ffmpeg).
# Idempotent: run by `make run` / `make test` whenever requirements change.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v ffprobe >/dev/null 2>&1 || need_apt+=(ffmpeg)  # Gradio's streaming video output needs ffprobe
fc-list 2>/dev/null | grep -i "noto.*cjk" >/dev/null || need_apt+=(fonts-noto-cjk)  # Chinese labels in headless screenshots
ldconfig -p 2>/dev/null | grep "libGL.so.1" >/dev/null || need_apt+=(libgl1)
ldconfig -p 2>/dev/null | grep "libglib-2.0.so.0" >/dev/null || need_apt+=(libglib2.0-0)
# Debian splits venv's pip bootstrap (ensurepip) into python3-venv: without it `python3 -m venv` fails
[ -x "$VENV/bin/python" ] || "$PYTHON" -c "import ensurepip" >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "[setup] apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" \
    || echo "[setup] warning: could not install ${need_apt[*]} (browser tests / streamed video need them)"
fi

# pip's configured local indexes print one warning per package they do not hold: keep the log readable
pip_install() { "$VENV/bin/python" -m pip install -q "$@" 2>&1 | { grep -v "neither a file nor a directory" || true; }; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip_install --upgrade pip >/dev/null
pip_install -r requirements.txt
pip_install --no-deps -r requirements-nodeps.txt
# Gradio's pydub looks for `ffmpeg` on PATH; the venv's bin is on PATH when the venv's python runs our code.
ln -sf "$("$VENV/bin/python" -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" "$VENV/bin/ffmpeg"
echo "[setup] done: $("$VENV/bin/python" --version) in $VENV"
