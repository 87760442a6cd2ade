"""Running a Triton kernel check in triton's CPU interpreter (TRITON_INTERPRET=1 must be set before triton is
imported, so the check runs in its own process)."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def interpreted_error(script: str, timeout: int = 600) -> float:
    """Runs `script` (python -c) with the interpreter on; it must exit 0 and print its worst error last."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path})
    assert run.returncode == 0, run.stderr[-2000:]
    return float(run.stdout.split()[-1])
