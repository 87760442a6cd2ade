"""`python -m avatar doctor`: the backend it reports is the one the stage would load, and the commands it prints
put the files where this config looks for them."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys

from avatar import manifest as mf
from avatar.cli import build_parser, load_config
from avatar.config import AvatarConfig
from avatar.doctor import doctor_report

from .conftest import ROOT


def _config_file(tmp_path):
    p = tmp_path / "my config.toml"  # a space: the printed command must quote it
    p.write_text(f'weights_dir = "{tmp_path / "w"}"\n[head]\neat_dir = "talking/eat"\n[chat]\nmodel_dir = "glm"\n')
    return p


def _config_of_command(command: str) -> AvatarConfig:
    """The config `python -m avatar ... download ...` would run with, parsed by the CLI itself."""
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "avatar"] and "download" in argv
    return load_config(build_parser().parse_args(argv[3:]))


def test_printed_download_commands_keep_the_config_and_weights_dir(tmp_path):
    p = _config_file(tmp_path)
    cfg = load_config(build_parser().parse_args(["--config", str(p), "--weights-dir", str(tmp_path / "other"),
                                                 "doctor"]))
    report = doctor_report(cfg, probe_servers=False, config_path=str(p))
    commands = [report["download_command"], report["list_command"]]
    commands += [e["download"] for s in report["stages"].values() for e in s["models"]]
    m = mf.default_manifest()
    for command in commands:
        again = _config_of_command(command)
        assert again.weights_dir == str(tmp_path / "other"), command
        for e in m.entries:  # every model would land where this config (and so the stages) look for it
            assert mf.target(again, e) == mf.target(cfg, e), (command, e.name)
    assert mf.target(cfg, m.entry("eat")) == tmp_path / "other/talking/eat"


def test_default_config_prints_the_plain_command():
    report = doctor_report(AvatarConfig(), probe_servers=False)
    assert report["list_command"] == "python -m avatar download --list"
    assert all(e["download"].startswith(f"python -m avatar download {e['name']}")
               for s in report["stages"].values() for e in s["models"])


def test_cli_doctor_names_its_config_file(tmp_path):
    p = _config_file(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "avatar", "--config", str(p), "doctor", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["download_command"], "the temporary weights_dir holds no model"
    assert shlex.split(report["download_command"])[3:7] == ["--config", str(p), "--weights-dir", str(tmp_path / "w")]
