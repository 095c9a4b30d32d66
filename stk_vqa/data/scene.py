"""The scene of one view of a frame (:mod:`stk_vqa.data.info_file` reads the frame).

The geometry reproduces the official labels of the public course dataset exactly:

1. keep the detections of class 1 (karts) of the view;
2. scale each box from the 600x400 label space to the image with truncation
   (``int(x * W / 600)``, ``int(y * H / 400)``);
3. drop a kart whose scaled width or height is below 5 px, or whose scaled box lies outside the image
   (``x2 < 0 or x1 > W or y2 < 0 or y1 > H``);
4. the centre of a kart is the midpoint of its scaled box; the *ego* kart is the kept kart whose centre is
   nearest the image centre ``(W/2, H/2)``. **Ties** (equal squared distance, compared exactly) go to the
   kart that comes first in the view's detection list, so the result never depends on anything but the file;
5. another kart is ``left`` of the ego if its centre x <= the ego's, else ``right``; ``front`` if its centre
   y < the ego's, else ``back``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from .info_file import KART_CLASS, Detection, Frame, InfoFileError, class_name

LABEL_SPACE = (600, 400)
"""Width and height of the pixel space the boxes of ``detections`` are given in."""
COURSE_IMAGE_SIZE = (150, 100)
"""Width and height of the course dataset's images."""
MIN_BOX_SIZE = 5


@dataclass(frozen=True)
class ScaledBox:
    """A box in image pixels after the course's truncating scale."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2)


@dataclass(frozen=True)
class KartInView:
    """A kept (visible) kart of one view."""

    instance_id: int
    name: str
    box: ScaledBox

    @property
    def center(self) -> tuple[float, float]:
        return self.box.center


@dataclass(frozen=True)
class ObjectInView:
    """A non-kart detection of one view whose scaled box overlaps the image."""

    class_id: int
    instance_id: int
    box: ScaledBox

    @property
    def class_name(self) -> str:
        return class_name(self.class_id)


@dataclass(frozen=True)
class ViewScene:
    """What one camera view shows, in the terms the questions use."""

    frame: Frame
    view_index: int
    image_size: tuple[int, int]
    karts: tuple[KartInView, ...]
    """Kept karts in detection order."""
    ego: KartInView | None

    @cached_property
    def objects(self) -> tuple[ObjectInView, ...]:
        """Non-kart detections whose scaled box is non-empty and overlaps the image (computed on first use)."""
        objects = []
        for det in self.frame.detections[self.view_index]:
            if det.class_id != KART_CLASS:
                box = scale_box(det, self.image_size)
                if box.width > 0 and box.height > 0 and not is_outside(box, self.image_size):
                    objects.append(ObjectInView(det.class_id, det.instance_id, box))
        return tuple(objects)

    @property
    def others(self) -> tuple[KartInView, ...]:
        """Kept karts other than the ego, in detection order."""
        return tuple(k for k in self.karts if k is not self.ego)

    def horizontal(self, kart: KartInView) -> str:
        """``'left'`` or ``'right'`` of the ego (equal x counts as left)."""
        assert self.ego is not None
        return "left" if kart.center[0] <= self.ego.center[0] else "right"

    def vertical(self, kart: KartInView) -> str:
        """``'front'`` or ``'back'`` of the ego (equal y counts as back)."""
        assert self.ego is not None
        return "front" if kart.center[1] < self.ego.center[1] else "back"


# -------------------------------------------------------------------------------------------- geometry

MAX_IMAGE_SIDE = 16384


def check_image_size(image_size: Sequence[int], source: str | os.PathLike = "image_size") -> tuple[int, int]:
    """``(width, height)`` as ints, each 1..MAX_IMAGE_SIDE, else :class:`InfoFileError`."""
    try:
        width, height = (int(v) for v in image_size)
    except (TypeError, ValueError, OverflowError):
        raise InfoFileError(source, "<image size>", f"expected (width, height), got {image_size!r}") from None
    if not (1 <= width <= MAX_IMAGE_SIDE and 1 <= height <= MAX_IMAGE_SIDE):
        raise InfoFileError(source, "<image size>", f"{width}x{height}: each side must be 1 to {MAX_IMAGE_SIDE} px")
    return width, height


def scale_box(det: Detection, image_size: Sequence[int]) -> ScaledBox:
    """Scale a label-space box to the image with the course's truncation (``int()``, towards zero)."""
    width, height = image_size
    sx, sy = width / LABEL_SPACE[0], height / LABEL_SPACE[1]
    return ScaledBox(int(det.x1 * sx), int(det.y1 * sy), int(det.x2 * sx), int(det.y2 * sy))


def is_outside(box: ScaledBox, image_size: Sequence[int]) -> bool:
    width, height = image_size
    return box.x2 < 0 or box.x1 > width or box.y2 < 0 or box.y1 > height


def is_kept_kart(box: ScaledBox, image_size: Sequence[int], min_box_size: int = MIN_BOX_SIZE) -> bool:
    """The course's visibility rule for karts: large enough and not outside the image."""
    return box.width >= min_box_size and box.height >= min_box_size and not is_outside(box, image_size)


def find_ego(karts: Sequence[KartInView], image_size: Sequence[int]) -> KartInView | None:
    """The kart whose centre is nearest the image centre; ties go to the first in detection order."""
    cx, cy = image_size[0] / 2, image_size[1] / 2
    best, best_d2 = None, math.inf
    for kart in karts:
        x, y = kart.center
        d2 = (x - cx) ** 2 + (y - cy) ** 2
        if d2 < best_d2:  # strict: an equal distance never replaces an earlier kart
            best, best_d2 = kart, d2
    return best


def view_scene(frame: Frame, view_index: int, image_size: Sequence[int] = COURSE_IMAGE_SIZE) -> ViewScene:
    """The scene of view ``view_index`` of ``frame`` for an image of ``image_size`` (width, height)."""
    if not 0 <= view_index < frame.num_views:
        raise InfoFileError(frame.source, "detections", f"view {view_index} out of range ({frame.num_views} views)")
    image_size = check_image_size(image_size, frame.source)
    karts = []
    for det in frame.detections[view_index]:
        if det.class_id == KART_CLASS:
            box = scale_box(det, image_size)
            if is_kept_kart(box, image_size):
                karts.append(KartInView(det.instance_id, frame.karts[det.instance_id], box))
    return ViewScene(frame, view_index, image_size, tuple(karts), find_ego(karts, image_size))
