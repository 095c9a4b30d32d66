"""Parse a SuperTuxKart ``<frame>_info.json`` and derive the scene of one view.

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

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

LABEL_SPACE = (600, 400)
"""Width and height of the pixel space the boxes of ``detections`` are given in."""
COURSE_IMAGE_SIZE = (150, 100)
"""Width and height of the course dataset's images."""
KART_CLASS = 1
MIN_BOX_SIZE = 5
OBJECT_CLASS_NAMES = {
    1: "kart",
    2: "track",
    3: "background",
    4: "pickup",
    5: "nitro",
    6: "bomb",
    7: "object",
    8: "projectile",
}
"""Class ids of ``detections`` (pystk's object types); other ids (e.g. 255) are kept as unknown objects."""


def class_name(class_id: int) -> str:
    """A class id's name (``class_<id>`` for ids the dataset does not name)."""
    return OBJECT_CLASS_NAMES.get(class_id, f"class_{class_id}")


REQUIRED_KEYS = ("track", "karts", "detections", "distance_down_track", "velocity")
MAX_ABS_COORDINATE = 1e6
"""Bound on every number of an info file (box corners, distances, velocities): far beyond any real frame, small
enough that no computation on it overflows."""
MAX_ID = 2**31 - 1
"""Bound on class and instance ids."""
MAX_NAME_LENGTH = 256
MAX_VIEWS = 64
MAX_INFO_FILE_BYTES = 16 * 2**20
"""An info file is a few kB; a larger one is not read (a 16 MB file would hold ~500k detections)."""


class InfoFileError(ValueError):
    """An info file that cannot give correct labels; names the file and the offending field."""

    def __init__(self, source: str | os.PathLike, field: str, problem: str):
        self.source = str(source)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.source}: field '{field}': {problem}")

    def __reduce__(self):  # picklable, so that pool workers can send it back
        return (type(self), (self.source, self.field, self.problem))


class Detection(NamedTuple):
    """One ``[class_id, instance_id, x1, y1, x2, y2]`` entry, in label space (600x400)."""

    class_id: int
    instance_id: int
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def class_name(self) -> str:
        return class_name(self.class_id)


@dataclass(frozen=True)
class Frame:
    """The parsed content of one info file (all views of one moment of a race)."""

    source: str
    frame_id: str
    track: str
    karts: tuple[str, ...]
    detections: tuple[tuple[Detection, ...], ...]
    distance_down_track: tuple[float, ...]
    velocity: tuple[tuple[float, ...], ...]
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def num_views(self) -> int:
        return len(self.detections)


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


# ----------------------------------------------------------------------------------------------- parsing


def frame_id_from_path(path: str | os.PathLike) -> str:
    name = Path(path).name
    if not name.endswith("_info.json"):
        raise InfoFileError(path, "<file name>", "expected a name of the form <frame>_info.json")
    return name[: -len("_info.json")]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"


def _number(value: Any, source: str, field_name: str, bound: float = MAX_ABS_COORDINATE) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InfoFileError(source, field_name, f"expected a number, got {_short(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InfoFileError(source, field_name, f"expected a finite number, got {value!r}")
    if not -bound <= value <= bound:
        raise InfoFileError(source, field_name, f"{_short(value)} is out of range (|value| <= {bound:g})")
    return value


def _integer(value: Any, source: str, field_name: str) -> int:
    number = _number(value, source, field_name, MAX_ID)
    if int(number) != number:
        raise InfoFileError(source, field_name, f"expected an integer, got {value!r}")
    return int(number)


def _name(value: Any, source: str, field_name: str) -> str:
    """A non-empty one-line string of at most MAX_NAME_LENGTH characters (it goes into question text)."""
    if not isinstance(value, str) or not value.strip():
        raise InfoFileError(source, field_name, f"expected a non-empty string, got {_short(value)}")
    if len(value) > MAX_NAME_LENGTH or not value.isprintable():
        raise InfoFileError(
            source,
            field_name,
            f"expected a printable name of at most {MAX_NAME_LENGTH} characters, got {_short(value)}",
        )
    return value


def _list(value: Any, source: str, field_name: str) -> list:
    if not isinstance(value, list):
        raise InfoFileError(source, field_name, f"expected a list, got {type(value).__name__}")
    return value


def _parse_detection(det: Any, where: str, source: str, num_karts: int) -> Detection:
    det = _list(det, source, where)
    if len(det) != 6:
        raise InfoFileError(source, where, f"expected [class_id, instance_id, x1, y1, x2, y2], got {det!r}")
    class_id = _integer(det[0], source, f"{where}[0] (class_id)")
    instance_id = _integer(det[1], source, f"{where}[1] (instance_id)")
    coords = [_number(det[k], source, f"{where}[{k}]") for k in range(2, 6)]
    if coords[2] < coords[0] or coords[3] < coords[1]:
        raise InfoFileError(source, where, f"box corners out of order (x2 < x1 or y2 < y1): {det!r}")
    if class_id == KART_CLASS and not 0 <= instance_id < num_karts:
        raise InfoFileError(
            source, f"{where}[1] (instance_id)", f"kart id {instance_id} out of range for {num_karts} karts"
        )
    return Detection(class_id, instance_id, *coords)


def _parse_view(view: Any, v: int, source: str, num_karts: int) -> tuple[Detection, ...]:
    """Validate one view's detections. The common case (six plain ints) takes a fast path; anything else
    goes through :func:`_parse_detection`, which checks each field and names the bad one."""
    bound, max_id = MAX_ABS_COORDINATE, MAX_ID
    dets = []
    for d, det in enumerate(_list(view, source, f"detections[{v}]")):
        if type(det) is list and len(det) == 6:
            c, i, x1, y1, x2, y2 = det
            if (
                type(c) is int
                and type(i) is int
                and type(x1) is int
                and type(y1) is int
                and type(x2) is int
                and type(y2) is int
                and (c != KART_CLASS or 0 <= i < num_karts)
                and -max_id <= c <= max_id
                and -max_id <= i <= max_id
                and -bound <= x1 <= x2 <= bound
                and -bound <= y1 <= y2 <= bound
            ):
                dets.append(Detection(c, i, x1, y1, x2, y2))
                continue
        dets.append(_parse_detection(det, f"detections[{v}][{d}]", source, num_karts))
    return tuple(dets)


def parse_frame(data: Any, source: str | os.PathLike, frame_id: str | None = None) -> Frame:
    """Validate the decoded JSON of an info file and return a :class:`Frame`.

    Raises :class:`InfoFileError` naming ``source`` and the field for anything that could give a wrong label.
    """
    source = str(source)
    if frame_id is None:
        frame_id = frame_id_from_path(source)
    if not isinstance(data, dict):
        raise InfoFileError(source, "<root>", f"expected a JSON object, got {type(data).__name__}")
    for key in REQUIRED_KEYS:
        if key not in data:
            raise InfoFileError(source, key, "missing key")

    track = _name(data["track"], source, "track")

    karts = _list(data["karts"], source, "karts")
    for i, name in enumerate(karts):
        _name(name, source, f"karts[{i}]")
    num_karts = len(karts)

    view_list = _list(data["detections"], source, "detections")
    if not 1 <= len(view_list) <= MAX_VIEWS:
        raise InfoFileError(source, "detections", f"has {len(view_list)} views, expected 1 to {MAX_VIEWS}")
    views = tuple(_parse_view(view, v, source, num_karts) for v, view in enumerate(view_list))

    def per_kart(key: str) -> list:
        values = _list(data[key], source, key)
        if len(values) != num_karts:
            raise InfoFileError(source, key, f"has {len(values)} entries for {num_karts} karts")
        return values

    distance = tuple(
        _number(x, source, f"distance_down_track[{i}]") for i, x in enumerate(per_kart("distance_down_track"))
    )
    velocity = []
    for i, vec in enumerate(per_kart("velocity")):
        vec = _list(vec, source, f"velocity[{i}]")
        if len(vec) != 3:
            raise InfoFileError(source, f"velocity[{i}]", f"expected a 3-vector, got {vec!r}")
        velocity.append(tuple(_number(x, source, f"velocity[{i}][{k}]") for k, x in enumerate(vec)))

    extra = {k: v for k, v in data.items() if k not in REQUIRED_KEYS}
    return Frame(source, frame_id, track, tuple(karts), views, distance, tuple(velocity), extra)


def load_frame(path: str | os.PathLike) -> Frame:
    """Read and validate one ``<frame>_info.json``.

    Every way the file can fail (unreadable, too large, not UTF-8, malformed, nested too deeply, out-of-range
    values) raises :class:`InfoFileError` naming the file and the field."""
    from stk_vqa.fileio import read_regular_file

    try:
        raw = read_regular_file(path, MAX_INFO_FILE_BYTES)
    except OSError as err:
        raise InfoFileError(path, "<file>", f"cannot read: {err.strerror or err}") from err
    if len(raw) > MAX_INFO_FILE_BYTES:
        raise InfoFileError(path, "<file>", f"larger than {MAX_INFO_FILE_BYTES // 2**20} MB; not an info file")
    try:
        data = json.loads(raw)
    except UnicodeDecodeError as err:
        raise InfoFileError(path, "<json>", f"not UTF-8 text: {err}") from err
    except json.JSONDecodeError as err:
        raise InfoFileError(path, "<json>", f"malformed JSON: {err}") from err
    except RecursionError:
        raise InfoFileError(path, "<json>", "nested too deeply") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise InfoFileError(path, "<json>", f"unreadable value: {err}") from err
    return parse_frame(data, path)


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
