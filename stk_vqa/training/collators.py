"""Collation hooks around TRL's vision-language collator (which does the tokenising, image processing and labels)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def describe_conversation(messages: list[dict]) -> str:
    """``role: text | role: text ...`` of a chat row (image items shown as ``<image>``)."""
    turns = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            text = content
        else:
            text = "".join(item.get("text") or "" if item.get("type") == "text" else "<image>" for item in content)
        turns.append(f"{message.get('role')}: {text}")
    return " | ".join(turns)


class RowRecorder:
    """Wraps a data collator and appends one JSON line per collated row to ``path``.

    Used with ``record_rows: true`` to audit which rows each process trained on (``rows/rank-<R>.jsonl``); the
    wrapped collator's output is returned unchanged.
    """

    def __init__(self, collator: Callable[[list[dict[str, Any]]], Any], path: str | os.PathLike):
        self.collator = collator
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, examples: list[dict[str, Any]]):
        lines = [json.dumps({"conversation": describe_conversation(example["messages"])}) for example in examples]
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines))
        return self.collator(examples)

    def __getattr__(self, name: str):  # e.g. `.processor` of the wrapped collator
        return getattr(self.collator, name)
