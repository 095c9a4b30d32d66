"""Render fresh SuperTuxKart frames with engine-exact labels, in the course's layout and conventions.

Engine: pysupertuxkart 1.1.2 (module ``pystk``) + Debian's ``supertuxkart-data`` + label-aware shaders generated
from that data (``make render-deps``; docs/rendering.md). Modules: ``instance`` (detections from the per-pixel
instance map; numpy only), ``shaders`` (the shader patcher and the data overlay), ``game_data`` (find the
engine and the assets, say what to install), ``race`` (one race in one process: step, render, read the state),
``frame_writer`` (course-layout info.json + view JPEGs, atomic), ``cli`` (``stk-vqa render``: plan races, shard,
run them in watched worker processes, resume).

``from stk_vqa.render import detections_from_instance`` imports numpy only (no game).
"""

from stk_vqa.render.instance import detections_from_instance

__all__ = ["detections_from_instance"]
