"""The original project's QA files: ``[{"image_file", "question", "answer"}, ...]`` (e.g. the course's
``valid_grader/balanced_qa_pairs.json``), read and validated once for the dataset builder and the evaluator."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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


def read_legacy_qa(path: str | Path) -> list[LegacyQA]:
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LegacyQAError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LegacyQAError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(records, list):
        raise LegacyQAError(f"{path}: expected a JSON list of {{image_file, question, answer}} objects")
    items = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise LegacyQAError(f"{path}: item {i}: expected an object, got {type(rec).__name__}")
        for key in REQUIRED_FIELDS:
            if not isinstance(rec.get(key), str):
                raise LegacyQAError(f"{path}: item {i}: field '{key}' missing or not a string")
        family, template = match_template(rec["question"])
        items.append(LegacyQA(rec["image_file"], rec["question"], rec["answer"], rec.get("family") or family, template))
    return items
