"""Read and validate a SuperTuxKart ``<frame>_info.json`` (the course dataset's layout) into a :class:`Frame`.

Every way a file can fail (unreadable, too large, not UTF-8, malformed, nested too deeply, a missing key, a value of
the wrong type or out of bounds) raises :class:`InfoFileError`, which names the file and the field. What the views
show (kept karts, the ego, left/right, front/back) is :mod:`stk_vqa.data.scene`'s job.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson

KART_CLASS = 1
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
        data = orjson.loads(raw)  # the fast path: any file it reads, json reads to the same values
    except orjson.JSONDecodeError:  # then the stdlib names the problem (or reads what orjson refuses: NaN, huge ints)
        data = _stdlib_json(raw, path)
    return parse_frame(data, path)


def _stdlib_json(raw: bytes, path: str | os.PathLike) -> Any:
    try:
        return json.loads(raw)
    except UnicodeDecodeError as err:
        raise InfoFileError(path, "<json>", f"not UTF-8 text: {err}") from err
    except json.JSONDecodeError as err:
        raise InfoFileError(path, "<json>", f"malformed JSON: {err}") from err
    except RecursionError:
        raise InfoFileError(path, "<json>", "nested too deeply") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise InfoFileError(path, "<json>", f"unreadable value: {err}") from err
