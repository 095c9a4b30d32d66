"""Evaluation items: one question about one image, with its gold answer, family and template.

Sources:

* a DatasetDict in the project's row format (a folder written by ``stk-vqa build``, a ``save_to_disk``
  folder, or a Hub dataset id) and a split. Per-pair rows and grouped rows (one image, a multi-turn
  conversation) both work: every user turn followed by an assistant turn is one item;
* a legacy QA json, a list of ``{"image_file", "question", "answer"}`` objects (the course's
  ``valid_grader/balanced_qa_pairs.json``, or ``stk-vqa generate``'s output), ``image_file`` relative to a data
  folder (by default the json's grandparent, the course's layout ``data/valid_grader/x.json`` + ``data/valid/...``).

Items that share an image share an ``image_key``, so inference can encode each image once.
Images are opened only when inference needs them (:func:`open_image`); one that cannot be opened is skipped
and counted by the caller.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stk_vqa.data.legacy_qa import LegacyQA, LegacyQAError, read_legacy_qa
from stk_vqa.data.questions import match_template

UNKNOWN_FAMILY = "unknown"
"""Family of a legacy question that matches no registered template."""


class DataSourceError(ValueError):
    """Evaluation data that cannot be read; the message names the file or id and the field."""


class UnreadableImageError(ValueError):
    """An image that cannot be opened (missing file, truncated or non-image bytes)."""


@dataclass(frozen=True)
class EvalItem:
    question: str
    answer: str
    family: str
    template: str
    """The question's registered template (``Is {kart} to the left ...``), or the question itself."""
    image_key: str
    """Equal for items about the same image."""
    image: str | bytes
    """A file path, or the encoded image bytes."""
    source: str
    """Where the item comes from (``row 12, turn 0`` / ``item 7``), for error messages and predictions."""
    image_file: str = ""


# ------------------------------------------------------------------------------------------ images


def open_image(image: str | bytes):
    """The image as an RGB ``PIL.Image`` (fully decoded), or :class:`UnreadableImageError`."""
    from PIL import Image

    try:
        if not isinstance(image, (bytes, bytearray)) and os.path.exists(image) and not os.path.isfile(image):
            raise OSError("not a regular file")  # a FIFO or device would block or never end
        handle = io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else open(image, "rb")
        with handle, Image.open(handle) as img:
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:  # PIL raises these for missing/truncated/garbage files
        where = "image bytes" if isinstance(image, (bytes, bytearray)) else str(image)
        raise UnreadableImageError(f"{where}: {type(err).__name__}: {err}") from err


# ------------------------------------------------------------------------------------------ legacy json


def load_legacy_json(qa_json: str | Path, data_dir: str | Path | None = None) -> list[EvalItem]:
    """Items of a legacy ``[{"image_file", "question", "answer"}, ...]`` file (an optional ``family`` is kept)."""
    path = Path(qa_json)
    try:
        records = read_legacy_qa(path)
    except LegacyQAError as err:
        raise DataSourceError(str(err)) from None
    root = Path(data_dir) if data_dir is not None else _guess_data_dir(path, records)
    items = []
    for i, rec in enumerate(records):
        image_path = root / rec.image_file
        items.append(
            EvalItem(
                question=rec.question,
                answer=rec.answer,
                family=rec.family or UNKNOWN_FAMILY,
                template=rec.template,
                image_key=str(image_path),
                image=str(image_path),
                source=f"{path.name} item {i}",
                image_file=rec.image_file,
            )
        )
    return items


def _guess_data_dir(path: Path, records: Sequence[LegacyQA]) -> Path:
    """The course's layout puts ``valid_grader/x.json`` beside ``valid/`` and names images ``valid/...``."""
    candidates = [path.parent.parent, path.parent]
    for candidate in candidates:
        if records and (candidate / records[0].image_file).exists():
            return candidate
    return candidates[0]


# ------------------------------------------------------------------------------------------ DatasetDict


def load_split(data: str | Path, split: str):
    """One split of a DatasetDict: a local folder (parquet layout or ``save_to_disk``) or a Hub dataset id."""
    import datasets

    path = Path(data)
    if path.exists():
        try:
            if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
                loaded = datasets.load_from_disk(str(path))
                if isinstance(loaded, datasets.DatasetDict):
                    if split not in loaded:
                        raise DataSourceError(f"{path}: no split {split!r}; it has {sorted(loaded)}")
                    return loaded[split]
                return loaded
            return datasets.load_dataset(str(path), split=split)
        except DataSourceError:
            raise
        except ValueError as err:
            if "split" in str(err).lower():
                raise DataSourceError(f"{path}: no split {split!r} ({err})") from None
            raise DataSourceError(f"{path}: not a loadable dataset ({err})") from None
        except FileNotFoundError as err:
            raise DataSourceError(f"{path}: not a loadable dataset ({err})") from None
    try:
        return datasets.load_dataset(str(data), split=split)
    except Exception as err:  # datasets raises many kinds here (offline, not found, gated, bad split)
        raise DataSourceError(
            f"{data}: no such local folder, and loading it as a Hub dataset failed "
            f"({type(err).__name__}: {err}). Offline (HF_HUB_OFFLINE=1) only cached datasets load."
        ) from None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content or [] if part.get("type") == "text")


def _pairs_of_row(row: dict, where: str) -> list[tuple[str, str, str | None]]:
    """``(question, answer, family)`` of each user turn answered by an assistant turn."""
    messages = row.get("messages")
    families = row.get("family")
    if messages:
        pairs = []
        for turn, reply in zip(messages, messages[1:]):
            if turn.get("role") == "user" and reply.get("role") == "assistant":
                pairs.append((_text_of(turn.get("content")), _text_of(reply.get("content"))))
        if not pairs:
            raise DataSourceError(f"{where}: field 'messages' has no user turn followed by an assistant turn")
    elif isinstance(row.get("question"), str) and isinstance(row.get("answer"), str):
        pairs = [(row["question"], row["answer"])]
    elif isinstance(row.get("question"), list) and isinstance(row.get("answer"), list):
        pairs = list(zip(row["question"], row["answer"]))
    else:
        raise DataSourceError(f"{where}: neither field 'messages' nor fields 'question'/'answer'")
    if isinstance(families, list):
        if len(families) != len(pairs):
            raise DataSourceError(f"{where}: field 'family' has {len(families)} entries for {len(pairs)} QA turns")
        return [(q, a, f) for (q, a), f in zip(pairs, families)]
    return [(q, a, families) for q, a in pairs]


def _image_source(images: Any, where: str) -> tuple[str | bytes, str]:
    """Image bytes (or path) and a content hash from an undecoded ``images`` cell."""
    if isinstance(images, dict):
        images = [images]
    if not images:
        raise DataSourceError(f"{where}: field 'images' is empty")
    first = images[0]
    if isinstance(first, dict) and first.get("bytes"):
        data = first["bytes"]
        return data, hashlib.sha1(data).hexdigest()
    if isinstance(first, dict) and first.get("path"):
        return first["path"], first["path"]
    raise DataSourceError(f"{where}: field 'images' holds neither bytes nor a path")


def load_dataset_items(
    data: str | Path, split: str = "validation", max_samples: int | None = None, seed: int = 0
) -> list[EvalItem]:
    """Items of one split; with ``max_samples``, a random subset of that many items drawn with ``seed``.

    Questions are read first without images; only the rows of the chosen items are then read with their
    (undecoded) image bytes.
    """
    import datasets

    ds = load_split(data, split)
    name = f"{data}[{split}]"
    if "images" not in ds.column_names:
        raise DataSourceError(f"{name}: no 'images' column (columns: {ds.column_names})")
    meta_columns = [c for c in ("messages", "question", "answer", "family", "image_file") if c in ds.column_names]
    pairs: list[tuple[int, int, str, str, str | None, str]] = []
    for row_index, row in enumerate(ds.select_columns(meta_columns)):
        where = f"{name} row {row_index}"
        for turn, (question, answer, family) in enumerate(_pairs_of_row(row, where)):
            pairs.append((row_index, turn, question, answer, family, row.get("image_file") or ""))
    pairs = [pairs[i] for i in sample_indices(len(pairs), max_samples, seed)]

    rows = sorted({p[0] for p in pairs})
    image_feature = ds.features["images"]
    images_only = ds.select_columns(["images"]).select(rows)
    if isinstance(image_feature, datasets.Image):  # one image per row rather than a list of one
        images_only = images_only.cast_column("images", datasets.Image(decode=False))
    elif isinstance(getattr(image_feature, "feature", None), datasets.Image):
        images_only = images_only.cast_column("images", datasets.Sequence(datasets.Image(decode=False)))
    sources = {}
    for row_index, cell in zip(rows, images_only["images"]):
        sources[row_index] = _image_source(cell, f"{name} row {row_index}")

    items = []
    for row_index, turn, question, answer, family, image_file in pairs:
        image, digest = sources[row_index]
        matched_family, template = match_template(question)
        items.append(
            EvalItem(
                question=question,
                answer=answer,
                family=family or matched_family or UNKNOWN_FAMILY,
                template=template,
                image_key=image_file or digest,
                image=image,
                source=f"row {row_index}" + (f" turn {turn}" if turn else ""),
                image_file=image_file,
            )
        )
    return items


def sample_indices(n: int, max_samples: int | None, seed: int) -> list[int]:
    """All of ``range(n)``, or ``max_samples`` of them drawn with ``seed`` (in ascending order)."""
    if max_samples is None or max_samples >= n:
        return list(range(n))
    if max_samples < 1:
        raise ValueError(f"--max_samples must be positive, got {max_samples}")
    return sorted(random.Random(seed).sample(range(n), int(max_samples)))


def load_items(
    data: str | Path,
    split: str = "validation",
    data_dir: str | Path | None = None,
    max_samples: int | None = None,
    seed: int = 0,
) -> list[EvalItem]:
    """Items from a legacy ``.json`` file (with ``data_dir``) or a DatasetDict folder / Hub id (with ``split``)."""
    if str(data).endswith(".json"):
        items = load_legacy_json(data, data_dir)
        return [items[i] for i in sample_indices(len(items), max_samples, seed)]
    return load_dataset_items(data, split, max_samples, seed)


def training_qa(data: str | Path, split: str = "train") -> list[tuple[str, str, str]]:
    """``(template, family, answer)`` of every training QA pair (no images read), for the blind prior."""
    if str(data).endswith(".json"):
        return [(it.template, it.family, it.answer) for it in load_legacy_json(data, data_dir=Path(data).parent)]
    ds = load_split(data, split)
    meta_columns = [c for c in ("messages", "question", "answer", "family") if c in ds.column_names]
    out = []
    for row_index, row in enumerate(ds.select_columns(meta_columns)):
        for question, answer, family in _pairs_of_row(row, f"{data}[{split}] row {row_index}"):
            matched_family, template = match_template(question)
            out.append((template, family or matched_family or UNKNOWN_FAMILY, answer))
    return out


def group_by_image(items: Iterable[EvalItem]) -> dict[str, list[int]]:
    """``image_key -> indices of its items``, in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item.image_key, []).append(i)
    return groups
