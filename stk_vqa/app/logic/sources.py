"""Where the frames come from: a folder in the course layout (e.g. the bundled sample) or a DatasetDict (a folder
or Hub id); both list splits, frames and views and give a :class:`~.views.ViewData`."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stk_vqa.data.info_file import InfoFileError, load_frame
from stk_vqa.data.questions import QAPair
from stk_vqa.data.scene import view_scene

from .config import AppError
from .views import ViewData, _open_image


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
