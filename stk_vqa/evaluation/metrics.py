"""Answer scoring: the course's prefix rule, normalised exact match, per-family tables, MAE for counts.

Two correctness rules are reported side by side:

* ``reference``: the course benchmark's rule, kept verbatim for comparability with its numbers::

      pred.strip().lower()[:len(gt)] == gt.strip().lower()[:len(gt)]

  A prefix rule: ``"10"`` is right for ``"1"``, ``"front and right"`` is right for ``"front"``, and
  ``"left"`` is right for ``"left "`` (``len`` counts the gold answer's unstripped characters).
* ``exact``: the honest number, equality after :func:`normalize_answer` (case, inner whitespace, trailing
  punctuation), and only for a generation that stopped by itself (a generation cut by the token limit is
  never exactly right, whatever its prefix).

Families whose gold answers are all whole numbers are *count* families (mean absolute error of the parsed
prediction); the others are *categorical* (confusion table gold x predicted).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_TRAILING_PUNCTUATION = ".,;:!?"
_WHITESPACE = re.compile(r"\s+")
_INTEGER = re.compile(r"^[+-]?\d+$")
NUMBER_WORDS = {
    word: value
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}
OTHER_LABEL = "(other)"
"""Confusion-table column of predictions that are none of the family's gold labels."""


def reference_correct(pred: str, gt: str) -> bool:
    """The course benchmark's rule, exactly (see the module docstring for its quirks)."""
    return pred.strip().lower()[: len(gt)] == gt.strip().lower()[: len(gt)]


def normalize_answer(text: str) -> str:
    """Lower case, whitespace runs collapsed to one space, stripped, trailing punctuation removed."""
    text = _WHITESPACE.sub(" ", text.lower()).strip()
    return text.rstrip(_TRAILING_PUNCTUATION + " ")


def exact_correct(pred: str, gt: str, finished: bool = True) -> bool:
    """Normalised exact match; a generation cut by the token limit (``finished=False``) is never right."""
    return finished and normalize_answer(pred) == normalize_answer(gt)


def parse_count(text: str) -> int | None:
    """A whole number (``"3"``, ``" 3."``, ``"three"``), or None when the text is not one."""
    norm = normalize_answer(text)
    if _INTEGER.match(norm):
        return int(norm)
    return NUMBER_WORDS.get(norm)


@dataclass(frozen=True)
class Scored:
    """One prediction, scored."""

    family: str
    gold: str
    pred: str
    reference: bool
    exact: bool


def score_one(pred: str, gold: str, family: str, finished: bool = True) -> Scored:
    return Scored(family, gold, pred, reference_correct(pred, gold), exact_correct(pred, gold, finished))


def count_families(golds_by_family: dict[str, Sequence[str]]) -> set[str]:
    """Families whose gold answers are all whole numbers."""
    return {fam for fam, golds in golds_by_family.items() if golds and all(_INTEGER.match(g.strip()) for g in golds)}


def _rate(flags: Iterable[bool]) -> tuple[int, float | None]:
    flags = list(flags)
    return len(flags), (sum(flags) / len(flags) if flags else None)


def summarize(scored: Sequence[Scored], count_family_names: set[str] | None = None) -> dict:
    """Overall and per-family accuracies; MAE for count families, confusion tables for the others.

    Returns ``{"overall": {...}, "families": {family: {...}}}``; every block has ``n``,
    ``reference_accuracy`` and ``exact_accuracy`` (None when ``n`` is 0), ``n_empty`` (blank predictions).
    """
    by_family: dict[str, list[Scored]] = defaultdict(list)
    for s in scored:
        by_family[s.family].append(s)
    if count_family_names is None:
        count_family_names = count_families({f: [s.gold for s in items] for f, items in by_family.items()})

    def block(items: Sequence[Scored]) -> dict:
        n, ref = _rate(s.reference for s in items)
        _, exact = _rate(s.exact for s in items)
        return {
            "n": n,
            "reference_accuracy": ref,
            "exact_accuracy": exact,
            "n_empty": sum(1 for s in items if not s.pred.strip()),
        }

    families = {}
    for fam in sorted(by_family):
        items = by_family[fam]
        out = block(items)
        if fam in count_family_names:
            out["kind"] = "count"
            out.update(count_errors(items))
        else:
            out["kind"] = "categorical"
            out["confusion"] = confusion_table(items)
        families[fam] = out
    return {"overall": block(scored), "families": families}


def count_errors(items: Sequence[Scored]) -> dict:
    """Mean absolute error over the predictions that parse as numbers, and how many did not."""
    errors, unparsed = [], 0
    for s in items:
        value = parse_count(s.pred)
        if value is None:
            unparsed += 1
        else:
            errors.append(abs(value - int(s.gold.strip())))
    return {"mae": (sum(errors) / len(errors) if errors else None), "n_unparsed": unparsed}


def confusion_table(items: Sequence[Scored]) -> dict:
    """``{"labels": gold labels (sorted), "columns": labels + [OTHER_LABEL], "matrix": rows = gold}``.

    Predictions are normalised; one that is no gold label of the family falls in ``(other)``.
    """
    labels = sorted({normalize_answer(s.gold) for s in items})
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * (len(labels) + 1) for _ in labels]
    for s in items:
        matrix[index[normalize_answer(s.gold)]][index.get(normalize_answer(s.pred), len(labels))] += 1
    return {"labels": labels, "columns": labels + [OTHER_LABEL], "matrix": matrix}


def majority(answers: Iterable[str]) -> str | None:
    """Most frequent answer; ties go to the alphabetically first (deterministic). None for no answers."""
    counts = Counter(answers)
    if not counts:
        return None
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
