"""Answer leakage in grouped rows (``--group_by_image``: one image, all its QA turns in one conversation): which
answers follow from earlier answers of the same row, that a causal language model sees while predicting them.

Rules (the project's default families, in the order the builder writes them):

* ``relative_position`` "Where is K relative to the ego car?" = "<front_back(K)> and <left_right(K)>";
* ``directional_count`` "How many karts are to the left of the ego car?" (and right / in front / behind) = the number
  of earlier left_right (front_back) answers equal to that side, once every other kart's answer came earlier
  (``kart_count - 1`` of them).

Each derived answer is checked against the real one; only those that match count as leaked.
"""

from __future__ import annotations

import re

LEFT_RIGHT = re.compile(r"Is (.+) to the left or right of the ego car\?")
FRONT_BACK = re.compile(r"Is (.+) in front of or behind the ego car\?")
RELATIVE = re.compile(r"Where is (.+) relative to the ego car\?")
COUNTS = {
    "How many karts are to the left of the ego car?": ("lr", "left"),
    "How many karts are to the right of the ego car?": ("lr", "right"),
    "How many karts are in front of the ego car?": ("fb", "front"),
    "How many karts are behind the ego car?": ("fb", "back"),
}


def derivable_from_earlier(pairs) -> list[bool]:
    """Per QA pair of one grouped row: is its answer a function of the answers before it (and equal to it)?"""
    seen = {"lr": {}, "fb": {}}
    total = None
    out = []
    for pair in pairs:
        question, answer = pair.question, pair.answer
        derived = None
        if match := RELATIVE.fullmatch(question):
            kart = match.group(1)
            if kart in seen["lr"] and kart in seen["fb"]:
                derived = f"{seen['fb'][kart]} and {seen['lr'][kart]}"
        elif question in COUNTS:
            axis, side = COUNTS[question]
            if total is not None and len(seen[axis]) == total - 1:
                derived = str(sum(1 for value in seen[axis].values() if value == side))
        out.append(derived == answer)
        if match := LEFT_RIGHT.fullmatch(question):
            seen["lr"][match.group(1)] = answer
        elif match := FRONT_BACK.fullmatch(question):
            seen["fb"][match.group(1)] = answer
        elif question == "How many karts are there in the scenario?":
            total = int(answer)
    return out
