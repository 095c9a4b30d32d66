"""Detections from the engine's per-pixel instance map, in the course's conventions (numpy only, no game import).

The engine labels every pixel with ``object_type << 24 | id`` (0: nothing drawn, e.g. sky). A detection is
``[class, id, x1, y1, x2, y2]`` with **inclusive** pixel bounds (``x2``/``y2`` = last pixel of the instance) in the
600x400 label space, one per instance present, sorted by label value (class, then id), as in the course's
``info.json`` files (e.g. ``[2, 0, 0, 155, 599, 399]``: the track reaches the last column and row).

Minimum size: one pixel. The course never published a threshold; its real validation info files
(``tests/data/reference/``, 2,410 detections) hold 1x1 boxes for karts, track, background and nitro (e.g.
``[1, 6, 281, 169, 281, 169]``), and a 1x1 inclusive box is exactly one pixel, so any threshold above one pixel
would have dropped them. Occluded parts are not in the map, so a box covers only the visible pixels.
"""

from __future__ import annotations

import numpy as np

from stk_vqa.data.info_file import KART_CLASS, OBJECT_CLASS_NAMES
from stk_vqa.data.scene import LABEL_SPACE

LABEL_SIZE = LABEL_SPACE  # (width, height) of the course's box space and of the rendered instance maps
MIN_PIXELS = 1
# object types the course's detections hold (pystk's ObjectType); 0 = nothing, 7 = "object" never appears in them
COURSE_CLASSES = {**{k: v for k, v in OBJECT_CLASS_NAMES.items() if k != 7}, 255: "unknown"}


def detections_from_instance(instance: np.ndarray, min_pixels: int = MIN_PIXELS) -> list[list[int]]:
    """Course-format detections ``[class, id, x1, y1, x2, y2]`` (inclusive) of a ``(H, W)`` uint32 instance map.

    Every instance of a course class with at least ``min_pixels`` pixels gets the tight box of its pixels.
    """
    instance = np.asarray(instance)
    if instance.ndim != 2:
        raise ValueError(f"instance map must be 2-D (H, W), got shape {instance.shape}")
    if instance.dtype.kind not in "ui":
        raise ValueError(f"instance map must hold integer labels, got dtype {instance.dtype}")
    if instance.size == 0:
        return []
    flat = instance.astype(np.uint32, copy=False).ravel()
    order = np.argsort(flat, kind="stable")
    labels_sorted = flat[order]
    starts = np.flatnonzero(np.r_[True, labels_sorted[1:] != labels_sorted[:-1]])
    labels = labels_sorted[starts]
    counts = np.diff(np.r_[starts, flat.size])
    width = instance.shape[1]
    rows, cols = np.divmod(order, width)
    y1 = rows[starts]  # stable sort over row-major indices: the first pixel of a label has its smallest row
    y2 = rows[np.r_[starts[1:], flat.size] - 1]
    x1 = np.minimum.reduceat(cols, starts)
    x2 = np.maximum.reduceat(cols, starts)
    classes = labels >> 24
    keep = np.isin(classes, list(COURSE_CLASSES)) & (counts >= min_pixels)
    return [
        [int(c), int(i), int(a), int(b), int(d), int(e)]
        for c, i, a, b, d, e in zip(classes[keep], (labels & 0xFFFFFF)[keep], x1[keep], y1[keep], x2[keep], y2[keep])
    ]


def kart_pixel_boxes(instance: np.ndarray) -> dict[int, tuple[int, int, int, int]]:
    """Kart id -> inclusive tight box ``(x1, y1, x2, y2)`` of its pixels (a direct, slow reference)."""
    instance = np.asarray(instance, dtype=np.uint32)
    out = {}
    for label in np.unique(instance):
        if label >> 24 == KART_CLASS:
            ys, xs = np.nonzero(instance == label)
            out[int(label & 0xFFFFFF)] = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    return out
