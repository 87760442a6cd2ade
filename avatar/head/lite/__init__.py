"""The "lite" talking head: a piecewise-affine warp of the aligned photo, driven by landmark offsets. CPU only, no
weights. From one photo and any speech it animates the mouth (our TTS's visemes, else the audio), the chosen emotion
(landmark offsets on brows, eyelids, cheeks and mouth, applied to the photo with its own expression taken out),
blinks, gaze and head motion (a pose sequence, turned about the neck, plus speech nods).

How a frame is made (all per-photo data is computed once in `prepare`: the rig):
- mesh.py: the 68 landmarks + cheek and forehead points + a ring around the head + fixed points on the frame border,
  Delaunay-triangulated once; neutral.py moves its rest positions so the photo's smile and open lips are gone;
- per frame the vertices move (engine.py: emotion, mouth shape from mouth.py / mouth_audio.py, then the head's pose
  from motion.py; the border never moves, so the background stays put); each triangle gives a target->source affine,
  evaluated on a coarse grid and upsampled (per pixel around the mouth) into one cv2.remap map; the A channel carries
  a matte of the photo, so matting follows the warp for free;
- eyes.py resamples that map inside the eyes (blinking lids, gaze); cavity.py paints the mouth's inside (teeth,
  tongue, throat) between the inner lips.
"""
from .engine import ClipPlan, LiteEngine
from .eyes import blink_track
from .mesh import Mesh, build_mesh, warp_map
from .mouth import MouthTrack, mouth_track

__all__ = ["ClipPlan", "LiteEngine", "Mesh", "MouthTrack", "blink_track", "build_mesh", "mouth_track", "warp_map"]
