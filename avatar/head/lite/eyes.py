"""Eyes of the lite engine: the blink schedule and the painted closing lids."""
from __future__ import annotations

import numpy as np

from avatar.core.types import FPS

from .draw import parabola, smoothstep
from .topology import EYES


def blink_track(n: int, seed: int, start_frame: int = 0) -> np.ndarray:
    """(n,) eyelid closure 0..1: a blink (~200 ms) every 2-6 s, seeded; frames start_frame.. of that schedule (a
    reply's later sentences continue it instead of blinking at the same offset in every clip)."""
    rng = np.random.default_rng(seed)
    start = max(0, int(start_frame))
    n, closure = start + n, np.zeros(start + n, np.float32)
    profile = np.array([0.35, 0.85, 1.0, 0.75, 0.35, 0.1], np.float32)
    t = int(rng.uniform(1.0, 3.0) * FPS)
    while t < n:
        span = closure[t: t + len(profile)]
        span[:] = np.maximum(span, profile[: len(span)])
        t += int(rng.uniform(2.0, 6.0) * FPS)
    return closure[start:]



def lid_colours(crop: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Per eye: the median colour of the skin between the upper lid and the brow (what a closing lid looks like)."""
    colours = []
    for upper, _, brow in EYES:
        lid = np.array([np.interp(np.linspace(0, 3, 12), range(4), pts[upper][:, k]) for k in (0, 1)]).T
        above = np.array([np.interp(np.linspace(0, 4, 12), range(5), pts[brow][:, k]) for k in (0, 1)]).T
        spots = np.concatenate([lid + k * (above - lid) for k in (0.4, 0.5, 0.6)])
        spots = np.clip(np.round(spots).astype(int), 0, crop.shape[0] - 1)
        colours.append(np.percentile(crop[spots[:, 1], spots[:, 0]].astype(np.float32), 70, axis=0))
    return np.array(colours, np.float32)


def draw_lids(frame: np.ndarray, mesh, target: np.ndarray, closure: float) -> None:
    """Paints closing upper lids over the eyes, in place: lid skin from the upper lid down to the lid edge at
    `closure` (0..1) of the way to the lower lid, shaded towards a dark lash line."""
    if closure <= 0.02:
        return
    h, w = frame.shape[:2]
    lash_px = max(1.0, 0.025 * mesh.iod_px)
    for (upper_idx, lower_idx, _), lid_rgb in zip(EYES, mesh.lid_rgb):
        upper_pts, lower_pts = target[upper_idx], target[lower_idx]
        x0, x1 = int(np.floor(upper_pts[:, 0].min())), int(np.ceil(upper_pts[:, 0].max())) + 1
        y0 = int(np.floor(min(upper_pts[:, 1].min(), lower_pts[:, 1].min()))) - 2
        y1 = int(np.ceil(max(upper_pts[:, 1].max(), lower_pts[:, 1].max()))) + 3
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        xs = np.arange(x0, x1, dtype=np.float32)
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        top, bottom = parabola(upper_pts, xs), parabola(lower_pts, xs)
        edge = top + closure * np.maximum(bottom - top, 0)
        inside_x = ((xs >= upper_pts[:, 0].min()) & (xs <= upper_pts[:, 0].max())).astype(np.float32)
        cover = smoothstep((edge - ys) + 0.5) * smoothstep(ys - (top - lash_px) + 0.5) * inside_x
        towards_edge = np.clip((ys - top) / np.maximum(edge - top, 1.0), 0, 1)
        colour = lid_rgb * (1.0 - 0.18 * towards_edge[..., None])
        lash = np.exp(-(((ys - edge) / lash_px) ** 2)) * inside_x * min(1.0, closure * 1.5)
        roi = frame[y0:y1, x0:x1].astype(np.float32)
        roi = roi * (1 - cover[..., None]) + colour * cover[..., None]
        roi = roi * (1 - 0.6 * lash[..., None]) + lid_rgb * 0.3 * 0.6 * lash[..., None]
        frame[y0:y1, x0:x1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)

