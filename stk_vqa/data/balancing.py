"""Answer balancing of QA rows, per question family, reproducible from a seed.

- :func:`clevr_balance`: CLEVR's rejection sampling. Rows are visited in a seeded random order; a row is
  rejected when the count already accepted for its answer exceeds 1.1x the runner-up answer's count, or
  5x the median answer count (the median floored at 5), the counts running over every answer the family
  has in the pool (starting at 0), exactly as CLEVR's question engine does for each template.
- :func:`grader_style_sample`: like the course's validation set, a fixed number of rows per family,
  drawn at random, with the directional counts whose answer is ``0`` dropped first.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

Row = Mapping[str, object]

ZERO_DROPPED_FAMILIES = ("directional_count",)


def _by_family(rows: Sequence[Row]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[str(row["family"])].append(i)
    return groups


def clevr_reject(answer_counts: Mapping[str, int], answer: str) -> bool:
    """CLEVR's test: would accepting one more ``answer`` make it dominate?"""
    ordered = sorted(answer_counts.values())
    median = max(ordered[len(ordered) // 2], 5)
    runner_up = ordered[-2] if len(ordered) > 1 else ordered[-1]
    count = answer_counts[answer]
    return count > 1.1 * runner_up or count > 5.0 * median


def clevr_balance(rows: Sequence[Row], seed: int = 0) -> list[Row]:
    """Rows kept by CLEVR-style rejection sampling, per family, in their original order."""
    keep: list[int] = []
    for family, indices in sorted(_by_family(rows).items()):
        if len({rows[i]["answer"] for i in indices}) < 2:
            keep.extend(indices)  # a single answer (e.g. one track) cannot be balanced; keep as is
            continue
        order = list(indices)
        random.Random(f"{seed}:{family}").shuffle(order)
        counts = Counter({str(rows[i]["answer"]): 0 for i in indices})
        for i in order:
            answer = str(rows[i]["answer"])
            if not clevr_reject(counts, answer):
                counts[answer] += 1
                keep.append(i)
    return [rows[i] for i in sorted(keep)]


def grader_style_sample(rows: Sequence[Row], per_family: int, seed: int = 0) -> list[Row]:
    """``per_family`` rows of each family at random (all if fewer), zero directional counts dropped."""
    if per_family <= 0:
        raise ValueError(f"per_family must be positive, got {per_family}")
    keep: list[int] = []
    for family, indices in sorted(_by_family(rows).items()):
        if family in ZERO_DROPPED_FAMILIES:
            indices = [i for i in indices if str(rows[i]["answer"]) != "0"]
        rng = random.Random(f"{seed}:{family}")
        keep.extend(indices if len(indices) <= per_family else rng.sample(indices, per_family))
    return [rows[i] for i in sorted(keep)]


def answer_distribution(rows: Iterable[Row]) -> dict[str, Counter]:
    """``{family: Counter(answer -> count)}``."""
    dist: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        dist[str(row["family"])][str(row["answer"])] += 1
    return dict(sorted(dist.items()))


def format_distribution(
    before: Mapping[str, Counter], after: Mapping[str, Counter] | None = None, top: int = 12
) -> str:
    """A markdown table of answers per family (``before -> after`` when both are given)."""
    lines = ["| family | rows | answers (count) |", "| --- | ---: | --- |"]
    for family, counts in before.items():
        new = after.get(family, Counter()) if after is not None else None
        items = counts.most_common(top)
        cells = ", ".join(f"{a} ({c}{f' -> {new[a]}' if new is not None else ''})" for a, c in items)
        if len(counts) > top:
            cells += f", ... {len(counts) - top} more"
        total = f"{sum(counts.values())}" + (f" -> {sum(new.values())}" if new is not None else "")
        lines.append(f"| {family} | {total} | {cells} |")
    return "\n".join(lines)
