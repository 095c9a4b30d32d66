"""One camera view as the page shows it: the image with its kart boxes, the scene facts, the QA pairs; a view from an
uploaded image and/or info.json."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stk_vqa.data.info_file import KART_CLASS, InfoFileError, frame_id_from_path, parse_frame
from stk_vqa.data.questions import QAPair, generate_scene_qa
from stk_vqa.data.scene import MIN_BOX_SIZE, ScaledBox, ViewScene, is_outside, scale_box, view_scene

from .config import AppError

EXPECTED_IMAGE_SIZES = ((150, 100), (600, 400))
"""The course's image size and the label space: the sizes an uploaded image is expected to have."""
DISPLAY_WIDTH = 600
DROPPED_COLOR = (170, 170, 170)


@dataclass
class ViewData:
    """One image to look at and ask about: a frame's view, a dataset row's image, or an upload."""

    label: str
    image: Any = None
    """RGB ``PIL.Image`` or None (a split of info files only)."""
    scene: ViewScene | None = None
    """None for a DatasetDict row or an image uploaded without info.json: no boxes, no generated questions."""
    pairs: tuple[QAPair, ...] | None = None
    """Fixed QA pairs (a DatasetDict's rows); None: generated from the scene."""
    notes: tuple[str, ...] = ()


def view_pairs(view: ViewData, families: str | Sequence[str] | None = "default") -> list[QAPair]:
    """The view's QA pairs: generated from its scene for ``families``, or the dataset rows' own."""
    if view.pairs is not None:
        return list(view.pairs)
    if view.scene is None:
        return []
    return generate_scene_qa(view.scene, families)


def qa_rows(view: ViewData, families: str | Sequence[str] | None = "default") -> list[list[str]]:
    """``[family, question, answer]`` rows of the view, family by family (registry order)."""
    return [[p.family, p.question, p.answer] for p in view_pairs(view, families)]


def question_choices(view: ViewData) -> list[tuple[str, str]]:
    """``(label, question)`` of the view's generated questions (every family), for the question picker."""
    return [(f"[{p.family}] {p.question}", p.question) for p in view_pairs(view, "all")]


def reference_answer(view: ViewData, question: str) -> QAPair | None:
    """The view's QA pair with this question (any family; spacing and case ignored), or None."""
    from stk_vqa.evaluation.metrics import normalize_answer

    wanted = normalize_answer(question)
    for pair in view_pairs(view, "all"):
        if normalize_answer(pair.question) == wanted:
            return pair
    return None


@dataclass(frozen=True)
class KartBox:
    """A kart detection of a view, kept or dropped by the course's rules."""

    instance_id: int
    name: str
    box: ScaledBox
    kept: bool
    why: str
    """For a kept kart its role (``EGO``, ``front and left``...); for a dropped one the rule that dropped it."""


def kart_boxes(scene: ViewScene) -> list[KartBox]:
    """Every kart detection of the scene's view, in detection order, with why it was kept or dropped."""
    kept = {(k.instance_id, k.box): k for k in scene.karts}
    width, height = scene.image_size
    out = []
    for det in scene.frame.detections[scene.view_index]:
        if det.class_id != KART_CLASS:
            continue
        box = scale_box(det, scene.image_size)
        name = scene.frame.karts[det.instance_id]
        kart = kept.get((det.instance_id, box))
        if kart is not None:
            why = "EGO" if kart is scene.ego else f"{scene.vertical(kart)} and {scene.horizontal(kart)}"
            out.append(KartBox(det.instance_id, name, box, True, why))
        elif is_outside(box, scene.image_size):
            out.append(KartBox(det.instance_id, name, box, False, f"outside the {width}x{height} image"))
        else:
            out.append(KartBox(det.instance_id, name, box, False,
                               f"too small: {box.width}x{box.height} px (< {MIN_BOX_SIZE} px)"))  # fmt: skip
    return out


def annotated_image(view: ViewData):
    """The view enlarged to about 600 px wide: kart boxes and names (ego red, others green, dropped karts grey);
    the plain image when there is no scene; None when there is neither."""
    from PIL import Image, ImageDraw

    from stk_vqa.data.draw import draw_scene

    if view.scene is None:
        if view.image is None:
            return None
        scale = max(1, DISPLAY_WIDTH // view.image.width)
        return view.image.resize((view.image.width * scale, view.image.height * scale), Image.NEAREST)
    scale = max(1, DISPLAY_WIDTH // view.scene.image_size[0])
    image = view.image
    if image is not None and image.size != view.scene.image_size:
        image = image.resize(view.scene.image_size)
    canvas = draw_scene(view.scene, image, scale=scale)
    pen = ImageDraw.Draw(canvas)
    for kart in kart_boxes(view.scene):
        if kart.kept or is_outside(kart.box, view.scene.image_size):
            continue
        b = kart.box
        pen.rectangle(
            [b.x1 * scale, b.y1 * scale, max(b.x1, b.x2) * scale, max(b.y1, b.y2) * scale],
            outline=DROPPED_COLOR,
            width=1,
        )  # fmt: skip  (named in the scene facts: labels would overlap)
    return canvas


def _md(text: Any) -> str:
    """Text safe inside Markdown and its table cells: one line (a model's answer may hold newlines), and ``<json>``
    must not read as an HTML tag."""
    text = " ".join(str(text).split())
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def scene_facts_markdown(view: ViewData) -> str:
    """The scene of the view: track, image size, kept karts with boxes and roles, dropped karts and why."""
    lines = [f"### {_md(view.label)}", ""]
    lines += [f"> {_md(n)}" for n in view.notes]
    if view.notes:
        lines.append("")
    scene = view.scene
    if scene is None:
        if view.image is not None:
            lines.append(f"Image {view.image.width}x{view.image.height}. No info.json: no boxes, no scene facts.")
        return "\n".join(lines)
    frame = scene.frame
    w, h = scene.image_size
    lines.append(
        f"**track** `{frame.track}` · **image** {w}x{h} · **karts in the race** {len(frame.karts)} · "
        f"**visible (kept)** {len(scene.karts)} · **ego** {scene.ego.name if scene.ego else '(none: no questions)'}"
    )
    boxes = kart_boxes(scene)
    kept = [k for k in boxes if k.kept]
    dropped = [k for k in boxes if not k.kept]
    if kept:
        lines += [
            "",
            "| kept kart | id | box (x1, y1, x2, y2) | centre | relative to the ego |",
            "|---|---|---|---|---|",
        ]
        for k in kept:
            b = k.box
            cx, cy = b.center
            lines.append(f"| {'**' + k.name + '**' if k.why == 'EGO' else k.name} | {k.instance_id} | "
                         f"({b.x1}, {b.y1}, {b.x2}, {b.y2}) | ({cx:g}, {cy:g}) | {k.why} |")  # fmt: skip
    if dropped:
        lines += ["", "| dropped kart | id | box (x1, y1, x2, y2) | why |", "|---|---|---|---|"]
        for k in dropped:
            b = k.box
            lines.append(f"| {k.name} | {k.instance_id} | ({b.x1}, {b.y1}, {b.x2}, {b.y2}) | {k.why} |")
    if not boxes:
        lines += ["", "No kart detection in this view: no questions."]
    if scene.objects:
        from collections import Counter

        counts = Counter(o.class_name for o in scene.objects if o.class_id not in (2, 3))
        if counts:
            lines += ["", "**objects** " + ", ".join(f"{name} x{n}" for name, n in sorted(counts.items()))]
    lines += ["", f"Boxes scaled from 600x400 with truncation; karts under {MIN_BOX_SIZE} px or outside the image are "
              "dropped; the ego is the kept kart nearest the image centre (docs/data.md, *Labels*)."]  # fmt: skip
    return "\n".join(lines)


def _open_image(image: str | bytes | Path, what: str):
    from stk_vqa.evaluation.items import UnreadableImageError, open_image

    try:
        return open_image(str(image) if isinstance(image, Path) else image)
    except UnreadableImageError as err:
        raise AppError(f"{what} is not an image that can be opened ({err})") from None


def _scene_notes(image_size: tuple[int, int]) -> tuple[str, ...]:
    if tuple(image_size) in EXPECTED_IMAGE_SIZES:
        return ()
    return (f"image size {image_size[0]}x{image_size[1]}: labels are made for 150x100 (the course's) or 600x400 "
            "(the label space); boxes are scaled to this size anyway",)  # fmt: skip


def view_from_upload(image_path: str | None, info_path: str | None, view_index: int | float | None = 0) -> ViewData:
    """A view from an uploaded image and/or its ``<frame>_info.json`` (one of them at least)."""
    if not image_path and not info_path:
        raise AppError("upload an image (150x100 or 600x400), its info.json, or both")
    image = _open_image(image_path, f"the uploaded file {Path(image_path).name!r}") if image_path else None
    if not info_path:
        return ViewData(label=f"upload: {Path(image_path).name}", image=image,
                        notes=("no info.json uploaded: no boxes and no generated questions; you can still ask",))  # fmt: skip
    name = Path(info_path).name
    try:
        data = json.loads(Path(info_path).read_bytes())
    except json.JSONDecodeError as err:
        raise AppError(f"{name}: field '<json>': malformed JSON: {err}") from None
    except UnicodeDecodeError as err:
        raise AppError(f"{name}: field '<json>': not UTF-8 text ({err})") from None
    try:
        frame_id = frame_id_from_path(name)
    except InfoFileError:
        frame_id = "upload"
    try:
        frame = parse_frame(data, name, frame_id)
    except InfoFileError as err:
        raise AppError(str(err)) from None
    index = int(view_index or 0)
    if not 0 <= index < frame.num_views:
        raise AppError(f"{name}: view {index} out of range (it has {frame.num_views} views: 0..{frame.num_views - 1})")
    size = image.size if image is not None else (150, 100)
    notes = _scene_notes(size) + (() if image is not None else ("no image uploaded: boxes on a grey 150x100 canvas",))
    return ViewData(label=f"upload: {name} view {index}", image=image, scene=view_scene(frame, index, size),
                    notes=notes)  # fmt: skip


def image_bytes(view: ViewData) -> bytes:
    """The view's image encoded as PNG (what the models are given)."""
    if view.image is None:
        raise AppError(f"{view.label}: this view has no image (a split of info files only): the models need one")
    buffer = io.BytesIO()
    view.image.save(buffer, format="PNG")
    return buffer.getvalue()
