"""The "lite" talking head: a piecewise-affine warp of the aligned photo, driven by landmark offsets. CPU only, no
weights. From one photo and any speech it animates the mouth (speech energy and spectral shape), the chosen emotion
(landmark offsets on brows, eyelids, cheeks and mouth), blinks and head motion (a pose sequence).

How a frame is made (all per-photo data is computed once in `prepare`):
- the mesh: the 68 landmarks + cheek and forehead points + a ring around the head + fixed points on the frame border,
  Delaunay-triangulated once (on a copy with the mouth held open, so the inner-mouth triangles join only inner lips);
- per frame the vertices move (expression offsets in face units, then the head's pose, weighted per vertex: the
  border never moves, so the background stays put); each triangle gives a target->source affine;
- the triangle index of every point of a coarse grid (MAP_GRID_N points per side) is rasterised with
  cv2.fillConvexPoly, the grid map is evaluated from the per-triangle affines, upsampled bilinearly (the map is
  continuous, so this is nearly exact) and applied to the RGBA source with one cv2.remap; the A channel carries a
  matte of the photo, so matting follows the warp for free;
- a mouth cavity (dark throat, a hint of upper and lower teeth) is painted between the inner lips as the mouth opens
  beyond the photo's own opening.
"""
from .engine import ClipPlan, LiteEngine
from .eyes import blink_track
from .mesh import Mesh, build_mesh, warp_map
from .mouth import MouthTrack, mouth_track

__all__ = ["ClipPlan", "LiteEngine", "Mesh", "MouthTrack", "blink_track", "build_mesh", "mouth_track", "warp_map"]
