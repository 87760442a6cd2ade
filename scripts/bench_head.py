"""Frames per second of the lite talking head on this machine's CPU, at 256 and 512 px, with and without matting.

    .venv/bin/python scripts/bench_head.py            # prints one JSON object
    .venv/bin/python scripts/bench_head.py --smoke    # tiny run (checks the script works)

"engine" = LiteEngine.frames(); "matting" = the render path on a solid colour (the photo's matte is computed once
and warped with each frame; that one-time cost is reported apart); "per_frame_matting" = segmenting every frame
(what an engine without its own matte, such as EAT, gets), for reference; "encode" adds H.264 + AAC encoding.
The speech is jfk.flac from ../shared/fixtures (looped to --seconds). Other processes share the CPU: the load
average is reported next to the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.bench import bench_lite_size  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu"], help="the lite engine runs on the CPU only")
    ap.add_argument("--dtype", default="uint8", choices=["uint8"], help="frames are uint8 (no tensors involved)")
    ap.add_argument("--batch", type=int, default=16, help="frames per generator batch")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--seconds", type=float, default=11.0, help="speech length per measurement")
    ap.add_argument("--threads", type=int, default=0, help="cv2 threads (0 = OpenCV's default)")
    ap.add_argument("--no-encode", action="store_true", help="skip the H.264 encoding measurement")
    ap.add_argument("--smoke", action="store_true", help="tiny run: 256 px, 1 s of speech")
    args = ap.parse_args(argv)
    import cv2

    from avatar.core.config import AvatarConfig
    from avatar.matting import Matting

    if args.threads:
        cv2.setNumThreads(args.threads)
    sizes, seconds = ([256], 1.0) if args.smoke else (args.sizes, args.seconds)
    matting = Matting.load(AvatarConfig())
    load_before = os.getloadavg()[0]
    results = {str(size): bench_lite_size(size, seconds, args.batch, not args.no_encode, matting) for size in sizes}
    print(json.dumps({"engine": "lite", "device": "cpu", "cpu_count": os.cpu_count(),
                      "cv2_threads": cv2.getNumThreads(), "matting_backend": matting.backend,
                      "seconds_of_speech": seconds, "batch": args.batch,
                      "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                      "fps": results, "goal": "512 with matting >= 25 fps on 2 cores"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
