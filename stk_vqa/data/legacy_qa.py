"""The original project's QA files: ``[{"image_file", "question", "answer"}, ...]`` (e.g. the course's
``valid_grader/balanced_qa_pairs.json``), read and validated once for the dataset builder and the evaluator."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from .questions import match_template

REQUIRED_FIELDS = ("image_file", "question", "answer")


class LegacyQAError(ValueError):
    """A legacy QA file that cannot be used; the message starts with the file and names the item and field."""


@dataclass(frozen=True)
class LegacyQA:
    image_file: str
    """Relative to the data folder, e.g. ``valid/00000_00_im.jpg``."""
    question: str
    answer: str
    family: str | None
    """The record's own ``family``, else the family whose template makes the question, else ``None``."""
    template: str
    """The question's registered template, or the question itself."""


def confined_image_file(value: str) -> str | None:
    """Why ``value`` is not a path inside the data folder (absolute, ``..``, a drive, a backslash), or None."""
    if not value.strip() or not value.isprintable():
        return "empty or not printable"
    if "\\" in value or PureWindowsPath(value).drive or PurePosixPath(value).is_absolute() or value.startswith("~"):
        return "not a relative path inside the data folder"
    if ".." in PurePosixPath(value).parts:
        return "contains '..': it must stay inside the data folder"
    return None


def read_legacy_qa(path: str | Path) -> list[LegacyQA]:
    """Read and validate a legacy QA file: every ``image_file`` a relative path inside the data folder (never
    absolute, never ``..``), ``question`` / ``answer`` non-empty strings, ``family`` a string or absent."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LegacyQAError(f"{path}: no such file") from None
    except RecursionError:
        raise LegacyQAError(f"{path}: not a readable JSON file (nested too deeply)") from None
    except (OSError, ValueError) as err:  # JSONDecodeError, UnicodeDecodeError, over-long integers are ValueErrors
        raise LegacyQAError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(records, list):
        raise LegacyQAError(f"{path}: expected a JSON list of {{image_file, question, answer}} objects")
    items = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise LegacyQAError(f"{path}: item {i}: expected an object, got {type(rec).__name__}")
        for key in REQUIRED_FIELDS:
            if not isinstance(rec.get(key), str) or not rec[key].strip():
                raise LegacyQAError(f"{path}: item {i}: field '{key}' missing, empty or not a string")
        problem = confined_image_file(rec["image_file"])
        if problem:
            raise LegacyQAError(f"{path}: item {i}: field 'image_file' {rec['image_file']!r}: {problem}")
        own = rec.get("family")
        if own is not None and (not isinstance(own, str) or not own.strip()):
            raise LegacyQAError(f"{path}: item {i}: field 'family' must be a non-empty string, got {own!r}")
        family, template = match_template(rec["question"])
        items.append(LegacyQA(rec["image_file"], rec["question"], rec["answer"], own or family, template))
    return items
