"""Write one rendered frame in the course layout: ``<frame>_<view:02d>_im.jpg`` files, then ``<frame>_info.json``.

Optionally each view's instance map too (``<frame>_<view:02d>_instance.npz``, key ``instance``), for segmentation
or checks.

The info file is written last, atomically, so its presence means the frame is complete (resume relies on it).
"""

from __future__ import annotations

import io
from pathlib import Path

from stk_vqa.fileio import atomic_write_bytes, atomic_write_json

# How the boxes in ``detections`` were made: tight inclusive boxes of each instance's pixels in the engine's
# per-pixel instance map (stk_vqa.render.instance), as in the course's own data.
BOX_METHOD = "engine-instance-map"


def frame_name(frame_id: int) -> str:
    return f"{frame_id:05x}"


def info_path(split_dir: Path, frame_id: int) -> Path:
    return Path(split_dir) / f"{frame_name(frame_id)}_info.json"


def image_path(split_dir: Path, frame_id: int, view: int) -> Path:
    return Path(split_dir) / f"{frame_name(frame_id)}_{view:02d}_im.jpg"


def instance_path(split_dir: Path, frame_id: int, view: int) -> Path:
    return Path(split_dir) / f"{frame_name(frame_id)}_{view:02d}_instance.npz"


def load_instance(path: str | Path):
    """A saved instance map (``(400, 600)`` uint32, ``class << 24 | id`` per pixel)."""
    import numpy as np

    with np.load(path) as data:
        return data["instance"]


def is_complete(split_dir: Path, frame_id: int, views: int) -> bool:
    return info_path(split_dir, frame_id).is_file() and all(
        image_path(split_dir, frame_id, v).is_file() for v in range(views)
    )


def build_info(track: str, karts: list[str], views: int, state: dict, extra: dict) -> dict:
    """The course's keys first (``track karts detections distance_down_track velocity``), then extra keys."""
    detections = state["detections"]
    if len(detections) != views:
        raise ValueError(f"state['detections'] holds {len(detections)} views, expected {views}")
    info = {
        "track": track,
        "karts": list(karts),
        "detections": detections,
        "distance_down_track": state["distance_down_track"],
        "velocity": state["velocity"],
        "box_method": BOX_METHOD,
    }
    info.update({k: v for k, v in state.items() if k not in info})
    info.update(extra)
    return info


def write_frame(split_dir: Path, frame_id: int, images, info: dict, jpeg_quality: int = 90, instances=None) -> Path:
    """View JPEGs (and, when given, each view's instance map as a compressed ``.npz``), then the info file."""
    from PIL import Image

    for view, pixels in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(pixels).convert("RGB").save(buffer, format="JPEG", quality=jpeg_quality)
        atomic_write_bytes(image_path(split_dir, frame_id, view), buffer.getvalue())
    for view, instance in enumerate(instances or []):
        import numpy as np

        buffer = io.BytesIO()
        np.savez_compressed(buffer, instance=np.asarray(instance, dtype=np.uint32))
        atomic_write_bytes(instance_path(split_dir, frame_id, view), buffer.getvalue())
    return atomic_write_json(info_path(split_dir, frame_id), info, indent=None)
