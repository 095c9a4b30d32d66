"""The plain functions behind ``stk-vqa app`` (no Gradio here: :mod:`stk_vqa.app.ui` only wires them).

* data: :func:`open_data` turns ``--data`` into a :class:`FramesSource` (a folder in the course layout, e.g. the
  bundled sample) or a :class:`DatasetSource` (a DatasetDict folder or Hub id); both list splits, frames and
  views and give a :class:`ViewData` (image, scene, QA pairs); :func:`view_from_upload` makes one from an uploaded
  image and/or info.json;
* frames: :func:`annotated_image` (boxes, names, ego; dropped karts in grey), :func:`scene_facts_markdown`
  (track, kept and dropped karts and why);
* questions: :func:`view_pairs`, :func:`qa_rows`, :func:`dataset_rows`;
* ask: :class:`ModelBank` loads the base model and adapters once (lazily, on the first question) and caches them;
  :func:`ask` answers one question with every model side by side, :func:`run_family` scores the view's questions;
* report: :func:`open_report` reads an evaluation folder.

Every failure the page must show is an :class:`AppError` whose message is a sentence for the user.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stk_vqa.data.questions import FAMILIES, QAPair, generate_scene_qa
from stk_vqa.data.scene import (
    KART_CLASS,
    MIN_BOX_SIZE,
    InfoFileError,
    ScaledBox,
    ViewScene,
    frame_id_from_path,
    is_outside,
    load_frame,
    parse_frame,
    scale_box,
    view_scene,
)
from stk_vqa.evaluation.configs import split_list

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[1]
BUNDLED_SAMPLE = PACKAGE_DIR / "data" / "sample"
QUICKSTART_DIR = Path("outputs/quickstart")
QUICKSTART_MODEL = "tiny-smolvlm"
QUICKSTART_ADAPTER = ("smoke_adapter", "adapter")
QUICKSTART_REPORT = "report"
EXPECTED_IMAGE_SIZES = ((150, 100), (600, 400))
"""The course's image size and the label space: the sizes an uploaded image is expected to have."""
DISPLAY_WIDTH = 600
FREE_QUESTION_TOKENS = 32
"""Generation limit for a free-text question (a generated one gets the evaluation's budget)."""
DROPPED_COLOR = (170, 170, 170)


class AppError(ValueError):
    """Something the page shows as a message (bad upload, unreadable data, a model that cannot load)."""


# ------------------------------------------------------------------------------------------------ config


@dataclass
class AppOptions:
    """Browse frames with their boxes and questions, ask the base model and adapters side by side, read reports."""

    data: str | None = field(
        default=None,
        metadata={
            "help": "Frames in the course layout (a folder of split folders, or one split folder) or a DatasetDict "
            "(a `stk-vqa build` folder or a Hub dataset id). Default: the bundled sample."
        },
    )
    model: str | None = field(default=None, metadata={"help": "Base model folder or Hub id."})
    adapters: list[str] = field(
        default_factory=list,
        metadata={
            "help": "LoRA adapters, each name=path or a path / Hub id (several values or comma-separated).",
            "nargs": "*",
        },
    )
    report: str | None = field(default=None, metadata={"help": "An evaluation folder to open in the Report tab."})
    server_name: str = field(
        default="127.0.0.1",
        metadata={"help": "Address to listen on (Gradio's flag; 0.0.0.0 for every interface). Never shared publicly."},
    )
    server_port: int = field(default=7860, metadata={"help": "Port (Gradio's flag)."})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu, cuda..."})


@dataclass
class AppConfig:
    data: str
    model: str | None
    """``None``: the first adapter's recorded base model."""
    adapters: list[str]
    """``name=path`` or paths / Hub ids."""
    report: str | None
    notes: list[str] = field(default_factory=list)


def resolve_config(
    data: str | None = None,
    model: str | None = None,
    adapters: Any = None,
    report: str | None = None,
    quickstart_dir: str | Path = QUICKSTART_DIR,
) -> AppConfig:
    """What the app opens: the given flags, else the bundled sample and, when ``quickstart_dir`` holds a
    ``make quickstart`` run (and neither ``--model`` nor ``--adapters`` is given), its tiny model, adapter and
    report; else SmolVLM-256M-Instruct, loaded only when a question is asked."""
    from stk_vqa.evaluation.models import DEFAULT_BASE_MODEL

    adapters = split_list(adapters)
    notes = []
    qs = Path(quickstart_dir)
    if data is None:
        data = str(BUNDLED_SAMPLE)
        notes.append("data: the bundled sample (pass --data DIR_OR_HUB_ID for other frames or a DatasetDict)")
    if model is None and not adapters:
        qs_model, qs_adapter = qs / QUICKSTART_MODEL, qs / QUICKSTART_ADAPTER[1]
        if (qs_model / "config.json").is_file():
            model = str(qs_model)
            if (qs_adapter / "adapter_config.json").is_file():
                adapters = [f"{QUICKSTART_ADAPTER[0]}={qs_adapter}"]
            notes.append(
                f"models: the quickstart's offline stand-in and its adapter ({qs}): random weights trained a "
                "few steps, so their answers show that the plumbing works, not what SmolVLM can do"
            )
        else:
            model = DEFAULT_BASE_MODEL
            notes.append(f"model: {DEFAULT_BASE_MODEL} (no {qs}; loaded when you ask the first question)")
    if report is None and (qs / QUICKSTART_REPORT / "results.json").is_file():
        report = str(qs / QUICKSTART_REPORT)
    return AppConfig(str(data), model, adapters, report, notes)


# ------------------------------------------------------------------------------------------------ views


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
              "dropped; the ego is the kept kart nearest the image centre (README, *Labels*)."]  # fmt: skip
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


# ------------------------------------------------------------------------------------------------ data sources


@dataclass
class FrameEntry:
    key: str
    label: str
    views: list[int]


class FramesSource:
    """Frames in the course layout: a folder of split folders (``train/``, ``valid/``) or one split folder."""

    kind = "frames"

    def __init__(self, root: str | Path):
        from stk_vqa.data.generate import INFO_RE

        self.root = Path(root)
        if not self.root.is_dir():
            raise AppError(f"data folder {self.root} does not exist")

        def has_info(folder: Path) -> bool:
            return any(INFO_RE.match(p.name) for p in folder.iterdir() if p.is_file())

        if has_info(self.root):
            self._splits = {self.root.name: self.root}
        else:
            found = {p.name: p for p in sorted(self.root.iterdir()) if p.is_dir() and has_info(p)}
            order = {"train": 0, "valid": 1, "validation": 1, "test": 2}
            self._splits = dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], 9), kv[0])))
        if not self._splits:
            raise AppError(f"{self.root}: no <frame>_info.json in it or in its sub-folders: not frames in the "
                           "course layout")  # fmt: skip
        self._frames: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def splits(self) -> list[str]:
        return list(self._splits)

    def _split_frames(self, split: str) -> dict[str, Any]:
        """``frame_id -> (FrameFiles, Frame or InfoFileError)``, read once per split."""
        from stk_vqa.data.generate import scan_split

        if split not in self._splits:
            raise AppError(f"no split {split!r} in {self.root} (splits: {', '.join(self._splits)})")
        with self._lock:
            if split not in self._frames:
                entries = {}
                for files in scan_split(self._splits[split]):
                    try:
                        entries[files.frame_id] = (files, load_frame(files.info_path))
                    except InfoFileError as err:
                        entries[files.frame_id] = (files, err)
                self._frames[split] = entries
            return self._frames[split]

    def frames(self, split: str) -> list[FrameEntry]:
        out = []
        for frame_id, (_files, frame) in self._split_frames(split).items():
            if isinstance(frame, InfoFileError):
                out.append(FrameEntry(frame_id, f"{frame_id} (bad info.json)", [0]))
            else:
                out.append(FrameEntry(frame_id, f"{frame_id} · {frame.track}", list(range(frame.num_views))))
        return out

    def view(self, split: str, frame_key: str, view_index: int) -> ViewData:
        from stk_vqa.data.scene import COURSE_IMAGE_SIZE

        entries = self._split_frames(split)
        if frame_key not in entries:
            raise AppError(f"no frame {frame_key!r} in split {split!r}")
        files, frame = entries[frame_key]
        if isinstance(frame, InfoFileError):
            raise AppError(str(frame))
        view_index = int(view_index)
        if not 0 <= view_index < frame.num_views:
            raise AppError(f"{files.info_path}: view {view_index} out of range ({frame.num_views} views)")
        image_path = files.info_path.parent / files.image_name(view_index)
        image, notes = None, ()
        if image_path.exists():
            image = _open_image(image_path, str(image_path))
        else:
            notes = (f"no image {image_path.name}: boxes on a grey canvas of the course's size",)
        size = image.size if image is not None else COURSE_IMAGE_SIZE
        label = f"{split}/{frame_key} view {view_index}"
        return ViewData(label=label, image=image, scene=view_scene(frame, view_index, size), notes=notes)

    def rows(self, split: str) -> list[list[Any]] | None:
        return None  # a frames folder has no dataset rows: its questions are generated per view


def _load_dataset_dict(ref: str):
    import datasets

    path = Path(ref)
    try:
        if path.exists():
            if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
                loaded = datasets.load_from_disk(str(path))
            else:
                loaded = datasets.load_dataset(str(path))
        else:
            loaded = datasets.load_dataset(ref)
    except Exception as err:  # datasets raises many kinds (offline, not found, not a dataset)
        where = "local folder" if path.exists() else "Hub dataset (offline only cached datasets load)"
        raise AppError(f"{ref}: could not be loaded as a {where} ({type(err).__name__}: {err})") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"data": loaded})
    return loaded


class DatasetSource:
    """A DatasetDict in the project's row format (``stk-vqa build`` output, a ``save_to_disk`` folder or a Hub id).

    Its images are grouped by ``frame_id`` and ``view_index`` (by row when those columns are absent); each image's
    questions are its rows' QA turns."""

    kind = "dataset"

    def __init__(self, ref: str):
        self.ref = str(ref)
        self.dataset = _load_dataset_dict(self.ref)
        self._index: dict[str, Any] = {}
        self._lock = threading.Lock()

    def splits(self) -> list[str]:
        return list(self.dataset)

    def _split_index(self, split: str) -> dict[str, Any]:
        """``{"meta": [row dicts], "pairs": [[(q, a, family)] per row], "frames": {key: {view: [rows]}}}``."""
        from stk_vqa.evaluation.items import DataSourceError, _pairs_of_row

        if split not in self.dataset:
            raise AppError(f"{self.ref}: no split {split!r} (splits: {', '.join(self.dataset)})")
        with self._lock:
            if split not in self._index:
                ds = self.dataset[split]
                columns = [c for c in ("messages", "question", "answer", "family", "frame_id", "view_index",
                                       "track", "image_file") if c in ds.column_names]  # fmt: skip
                meta, pairs, frames = [], [], {}
                for i, row in enumerate(ds.select_columns(columns)):
                    try:
                        row_pairs = _pairs_of_row(row, f"{self.ref}[{split}] row {i}")
                    except DataSourceError as err:
                        raise AppError(str(err)) from None
                    meta.append(row)
                    pairs.append(row_pairs)
                    key = str(row.get("frame_id") or f"row {i}")
                    view = int(row.get("view_index") or 0) if row.get("frame_id") else 0
                    frames.setdefault(key, {}).setdefault(view, []).append(i)
                self._index[split] = {"meta": meta, "pairs": pairs, "frames": frames}
            return self._index[split]

    def frames(self, split: str) -> list[FrameEntry]:
        index = self._split_index(split)
        out = []
        for key, views in index["frames"].items():
            track = index["meta"][next(iter(views.values()))[0]].get("track")
            out.append(FrameEntry(key, f"{key} · {track}" if track else key, sorted(views)))
        return out

    def view(self, split: str, frame_key: str, view_index: int) -> ViewData:
        index = self._split_index(split)
        views = index["frames"].get(frame_key)
        if views is None or int(view_index) not in views:
            raise AppError(f"no frame {frame_key!r} view {view_index} in split {split!r}")
        rows = views[int(view_index)]
        image = None
        cell = self.dataset[split][rows[0]].get("images")
        if isinstance(cell, list):
            cell = cell[0] if cell else None
        if cell is not None:
            image = cell.convert("RGB")
        pairs = tuple(QAPair(q, a, f or "unknown") for r in rows for q, a, f in index["pairs"][r])
        label = f"{split}/{frame_key}" + (f" view {view_index}" if not frame_key.startswith("row ") else "")
        notes = (f"a DatasetDict row ({self.ref}): no info.json, so no boxes; its questions are the rows' own",)
        return ViewData(label=label, image=image, pairs=pairs, notes=notes)

    def rows(self, split: str) -> list[list[Any]]:
        """``[row, frame, view, track, family, question, answer]`` of every QA turn of the split."""
        index = self._split_index(split)
        out = []
        for i, (row, pairs) in enumerate(zip(index["meta"], index["pairs"])):
            for q, a, f in pairs:
                out.append([i, row.get("frame_id", ""), row.get("view_index", ""), row.get("track", ""), f or "", q, a])
        return out


def open_data(ref: str | Path) -> FramesSource | DatasetSource:
    """Frames in the course layout when ``ref`` is such a folder, else a DatasetDict (folder or Hub id)."""
    path = Path(ref)
    if path.is_dir():
        try:
            return FramesSource(path)
        except AppError:
            pass  # not frames: try a DatasetDict
    elif path.exists():
        raise AppError(f"--data {ref}: a file; expected a frames folder, a DatasetDict folder or a Hub dataset id")
    return DatasetSource(str(ref))


# ------------------------------------------------------------------------------------------------ models


class ModelBank:
    """The base model and the adapters, loaded once (on first use) and shared by every page.

    An adapter that cannot be used (missing, not an adapter, made for another base, weights that do not fit) is
    left out with a message; the base model and the other adapters still answer."""

    def __init__(self, model: str | None, adapters: Sequence[str] = (), device: str = "auto", dtype: str = "auto"):
        self.model = model
        self.adapters = list(adapters)
        self.device = device
        self.dtype = dtype
        self._loaded = None
        self.problems: list[str] = []
        self._lock = threading.RLock()

    def configure(self, model: str | None, adapters: Sequence[str]) -> None:
        """Use other models (loaded on the next question)."""
        with self._lock:
            self.model = model or None
            self.adapters = list(adapters)
            self._loaded = None
            self.problems = []

    @property
    def loaded(self):
        return self._loaded

    def describe_markdown(self) -> str:
        base = self.model or "(the first adapter's recorded base)"
        lines = [f"**base** `{base}`"]
        lines += [f"**adapter** `{a}`" for a in self.adapters] or ["no adapter"]
        state = "loaded" if self._loaded is not None else "loaded on the first question"
        lines.append(f"({state})")
        lines += [f"⚠️ {_md(p)}" for p in self.problems]
        return " · ".join(lines)

    def _usable_adapters(self, base: str | None) -> tuple[list[str], list[str]]:
        from stk_vqa.evaluation.models import (
            ModelSourceError,
            _adapter_ref,
            read_adapter_config,
            resolve_adapter,
            same_base_model,
        )

        good, problems = [], []
        for spec in self.adapters:
            ref = _adapter_ref(spec)
            try:
                config = read_adapter_config(resolve_adapter(ref))
            except ModelSourceError as err:
                problems.append(f"adapter left out: {err}")
                continue
            recorded = config.get("base_model_name_or_path")
            if base and recorded and not same_base_model(recorded, base):
                problems.append(f"adapter left out: {ref} was trained on base model {recorded!r}, not on {base!r} "
                                "(adapter_config.json, field 'base_model_name_or_path')")  # fmt: skip
                continue
            good.append(spec)
        return good, problems

    def get(self):
        """The :class:`~stk_vqa.evaluation.models.LoadedModels` (loading them on the first call)."""
        from stk_vqa.evaluation.models import ModelSourceError, _adapter_ref, default_base_for, load_models

        with self._lock:
            if self._loaded is not None:
                return self._loaded
            base = self.model
            if base is None:
                good, problems = self._usable_adapters(None)
                if not good:
                    raise AppError("no base model given and no usable adapter to take one from: "
                                   + " ".join(problems))  # fmt: skip
                base = default_base_for([_adapter_ref(a) for a in good[:1]])
            good, problems = self._usable_adapters(base)
            while True:
                try:
                    loaded = load_models(base, good, with_base=True, device=self.device, dtype=self.dtype)
                    break
                except ModelSourceError as err:
                    culprit = next((a for a in good if _adapter_ref(a) in str(err)), None)
                    if culprit is None:  # the base model itself
                        raise AppError(f"the models could not be loaded: {err}") from None
                    problems.append(f"adapter left out: {err}")
                    good.remove(culprit)
                except OSError as err:
                    raise AppError(f"the models could not be loaded: {err}") from None
            self._loaded = loaded
            self.problems = problems
            return loaded


@dataclass
class AskResult:
    question: str
    reference: QAPair | None
    rows: list[list[str]]
    """``[model, answer, verdict]`` per model (verdict empty without a reference)."""
    problems: list[str]


def _verdict(pred: str, gold: str, family: str, finished: bool) -> str:
    from stk_vqa.evaluation.metrics import score_one

    scored = score_one(pred, gold, family, finished)
    if scored.exact:
        return "✓ right"
    return "~ right by the course's prefix rule only" if scored.reference else "✗ wrong"


def _generate(bank: ModelBank, view: ViewData, questions: Sequence[tuple[str, str, str]], max_new_tokens):
    """Answers of every model for ``(question, answer, family)`` triples about the view's image."""
    import hashlib

    from stk_vqa.data.questions import match_template
    from stk_vqa.evaluation.inference import generate_answers
    from stk_vqa.evaluation.items import EvalItem

    data = image_bytes(view)
    key = hashlib.sha1(data).hexdigest()
    items = [EvalItem(question=q, answer=a, family=f, template=match_template(q)[1], image_key=key, image=data,
                      source=view.label) for q, a, f in questions]  # fmt: skip
    loaded = bank.get()
    with bank._lock:  # one generation at a time: the active adapter is model-wide state
        generations, skipped = generate_answers(loaded, items, batch_size=16, max_new_tokens=max_new_tokens,
                                                progress=False)  # fmt: skip
    if skipped:
        raise AppError(f"{view.label}: the image could not be read ({next(iter(skipped.values()))})")
    return loaded, generations


def ask(bank: ModelBank, view: ViewData, question: str) -> AskResult:
    """The question answered by the base model and every adapter; the reference answer when it is one of the
    view's generated questions."""
    question = (question or "").strip()
    if not question:
        raise AppError("type a question, or pick one of the view's questions")
    reference = reference_answer(view, question)
    triple = (question, reference.answer if reference else "", reference.family if reference else "")
    # A generated question gets the evaluation's token budget (so answers match `stk-vqa evaluate`'s).
    loaded, generations = _generate(bank, view, [triple], None if reference else FREE_QUESTION_TOKENS)
    rows = []
    for candidate in loaded.candidates:
        gen = generations[candidate.name][0]
        text = gen.text if gen else ""
        verdict = _verdict(text, reference.answer, reference.family, gen.finished) if reference and gen else ""
        rows.append([candidate.name, text if text else "(empty answer)", verdict])
    return AskResult(question, reference, rows, list(bank.problems))


def ask_markdown(result: AskResult) -> str:
    lines = [f"**Q:** {_md(result.question)}", ""]
    if result.reference is not None:
        lines.append(f"**reference answer:** `{_md(result.reference.answer)}` (family `{result.reference.family}`)")
    else:
        lines.append("*(not one of this view's generated questions: no reference answer)*")
    lines += ["", "| model | answer | |", "|---|---|---|"]
    lines += [f"| {_md(m)} | {_md(a)} | {v} |" for m, a, v in result.rows]
    lines += ["", *[f"⚠️ {_md(p)}" for p in result.problems]]
    return "\n".join(lines)


@dataclass
class FamilyRun:
    family: str
    header: list[str]
    rows: list[list[str]]
    """``[family (only for all families), question, reference, answer of each model...]``; answers marked ✓ / ✗
    (exact match)."""
    summary: list[list[str]]
    """``[model, right (exact), right (course rule)]``."""
    problems: list[str]


def run_family(bank: ModelBank, view: ViewData, family: str = "all") -> FamilyRun:
    """Every model on the view's generated questions of ``family`` (``all``: every family), scored."""
    from stk_vqa.evaluation.metrics import score_one

    pairs = view_pairs(view, "all")
    if family and family != "all":
        pairs = [p for p in pairs if p.family == family]
    if not pairs:
        raise AppError(f"{view.label}: no question of family {family!r} for this view")
    loaded, generations = _generate(bank, view, [(p.question, p.answer, p.family) for p in pairs], None)
    names = [c.name for c in loaded.candidates]
    rows = []
    right = {n: [0, 0] for n in names}
    one_family = bool(family and family != "all")
    for i, pair in enumerate(pairs):
        row = ([] if one_family else [pair.family]) + [pair.question, pair.answer]
        for name in names:
            gen = generations[name][i]
            scored = score_one(gen.text if gen else "", pair.answer, pair.family, bool(gen and gen.finished))
            right[name][0] += scored.exact
            right[name][1] += scored.reference
            row.append(f"{'✓' if scored.exact else '✗'} {scored.pred or '(empty)'}")
        rows.append(row)
    n = len(pairs)
    summary = [[name, f"{e}/{n}", f"{r}/{n}"] for name, (e, r) in right.items()]
    header = ([] if one_family else ["family"]) + ["question", "reference", *names]
    return FamilyRun(family or "all", header, rows, summary, list(bank.problems))


def family_run_markdown(run: FamilyRun) -> str:
    lines = [f"**{len(run.rows)} question(s), family `{run.family}`** · right: "
             + " · ".join(f"**{m}** {e} exact ({r} by the course's rule)" for m, e, r in run.summary), ""]  # fmt: skip
    lines += ["| " + " | ".join(run.header) + " |", "|" + "---|" * len(run.header)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in run.rows]
    lines += ["", *[f"⚠️ {_md(p)}" for p in run.problems]]
    return "\n".join(lines)


def family_choices() -> list[str]:
    return ["all", *FAMILIES]


# ------------------------------------------------------------------------------------------------ report


@dataclass
class ReportView:
    folder: str
    title: str
    header: list[str]
    rows: list[list[str]]
    """``[family, n, exact % (course rule %) per model]``, then an ``overall`` row."""
    chart: str | None
    markdown: str


def open_report(folder: str | Path | None) -> ReportView:
    """An evaluation folder (``stk-vqa evaluate`` / ``quickstart`` output): its table, chart and report.md."""
    from stk_vqa.evaluation.report import CHART_FILE, REPORT_FILE, RESULTS_FILE, pct

    if not folder or not str(folder).strip():
        raise AppError("give an evaluation folder (one holding results.json, e.g. outputs/quickstart/report)")
    path = Path(str(folder).strip()).expanduser()
    if not path.is_dir():
        raise AppError(f"{path}: no such folder")
    results_file = path / RESULTS_FILE
    if not results_file.is_file():
        raise AppError(f"{path}: no {RESULTS_FILE}: not an evaluation folder")
    try:
        results = json.loads(results_file.read_text(encoding="utf-8"))
        models, data = results["models"], results["data"]
        names = list(models)
        rows = []
        for f, n in data["families"].items():
            cells = [f, str(n)]
            for m in names:
                fam = models[m]["families"].get(f, {})
                cells.append(f"{pct(fam.get('exact_accuracy'))} ({pct(fam.get('reference_accuracy'))})")
            rows.append(cells)
        rows.append(["overall", str(data["n_evaluated"])]
                    + [f"{pct(models[m]['overall']['exact_accuracy'])} ({pct(models[m]['overall']['reference_accuracy'])})"
                       for m in names])  # fmt: skip
        title = (results.get("config") or {}).get("title") or "stk-vqa evaluation"
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise AppError(
            f"{results_file}: not a results file of stk-vqa evaluate ({type(err).__name__}: {err})"
        ) from None
    markdown = ""
    if (path / REPORT_FILE).is_file():
        markdown = (path / REPORT_FILE).read_text(encoding="utf-8")
        markdown = re.sub(r"!\[[^\]]*\]\(" + re.escape(CHART_FILE) + r"\)\n?", "", markdown)  # shown beside it
    chart = str(path / CHART_FILE) if (path / CHART_FILE).is_file() else None
    return ReportView(str(path), title, ["family", "n", *names], rows, chart, markdown)


def safe_message(err: BaseException) -> str:
    """A one-paragraph message for the page (never a traceback)."""
    if isinstance(err, AppError):
        return f"⚠️ {_md(err)}"
    first = str(err).splitlines()[0] if str(err) else ""
    return f"⚠️ unexpected error: {type(err).__name__}: {_md(first)} (details in the server log)"
