#!/usr/bin/env python
"""Download and verify the original design's weights (see avatar/weights/models.toml). Same as
`python -m avatar download`, with extra flags: --mirror, --verify, --keep-archives, --skip-optional, --retries,
--no-progress.

    python scripts/download_models.py --list
    python scripts/download_models.py gfpgan modnet
    python scripts/download_models.py head --yes --weights-dir /data/avatar-weights
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar.weights.download import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli())
