"""Write one rendered frame in the course layout: ``<frame>_<view:02d>_im.jpg`` files, then ``<frame>_info.json``.

The info file is written last, atomically, so its presence means the frame is complete (resume relies on it).
"""

from __future__ import annotations

import io
from pathlib import Path

from stk_vqa.fileio import atomic_write_bytes, atomic_write_json

from stk_vqa.render.kart_boxes import BOX_METHOD

# How the boxes in ``detections`` were made: "none" when a frame has no box source; rendered frames use
# ``kart_boxes.BOX_METHOD`` (chase-camera model + depth test; pystk2 0.7.4 gives no instance labels).
BOX_METHOD_NONE = "none"


def frame_name(frame_id: int) -> str:
    return f"{frame_id:05x}"


def info_path(split_dir: Path, frame_id: int) -> Path:
    return Path(split_dir) / f"{frame_name(frame_id)}_info.json"


def image_path(split_dir: Path, frame_id: int, view: int) -> Path:
    return Path(split_dir) / f"{frame_name(frame_id)}_{view:02d}_im.jpg"


def is_complete(split_dir: Path, frame_id: int, views: int) -> bool:
    return info_path(split_dir, frame_id).is_file() and all(
        image_path(split_dir, frame_id, v).is_file() for v in range(views)
    )


def build_info(track: str, karts: list[str], views: int, state: dict, extra: dict) -> dict:
    """The course's keys first (``track karts detections distance_down_track velocity``), then extra keys."""
    detections = state.get("detections")
    info = {
        "track": track,
        "karts": list(karts),
        "detections": detections if detections is not None else [[] for _ in range(views)],
        "distance_down_track": state["distance_down_track"],
        "velocity": state["velocity"],
        "box_method": BOX_METHOD if detections is not None else BOX_METHOD_NONE,
    }
    info.update({k: v for k, v in state.items() if k not in info})
    info.update(extra)
    return info


def write_frame(split_dir: Path, frame_id: int, images, info: dict, jpeg_quality: int = 90) -> Path:
    from PIL import Image

    for view, pixels in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(pixels).convert("RGB").save(buffer, format="JPEG", quality=jpeg_quality)
        atomic_write_bytes(image_path(split_dir, frame_id, view), buffer.getvalue())
    return atomic_write_json(info_path(split_dir, frame_id), info, indent=None)
