"""How many answers of a grouped row (``--group_by_image``: one image, all its QA turns) follow from earlier answers
of the same row, which a causal language model sees while predicting them.

Rules (the project's default families, in the order the builder writes them):

* ``relative_position`` "Where is K relative to the ego car?" = "<front_back(K)> and <left_right(K)>";
* ``directional_count`` "How many karts are to the left of the ego car?" (and right / in front / behind) = the number
  of earlier left_right (front_back) answers equal to that side, once every other kart's answer came earlier
  (``kart_count - 1`` of them).

Each derived answer is checked against the real one; only those that match count as leaked.

    python benchmarks/grouped_rows_leakage.py [--info_dir tests/data/reference]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from stk_vqa.data.leakage import derivable_from_earlier

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    from stk_vqa.data.info_file import load_frame
    from stk_vqa.data.questions import generate_view_qa

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--info_dir", default=str(REPO_ROOT / "tests" / "data" / "reference"))
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "grouped_rows_leakage.json"))
    args = parser.parse_args(argv)
    infos = sorted(Path(args.info_dir).glob("*_info.json"))
    if not infos:
        raise SystemExit(f"no *_info.json in {args.info_dir}")
    leaked, total, rows = Counter(), Counter(), 0
    for info in infos:
        frame = load_frame(info)
        for view in range(frame.num_views):
            pairs = generate_view_qa(frame, view)
            if not pairs:
                continue
            rows += 1
            for pair, derived in zip(pairs, derivable_from_earlier(pairs)):
                total[pair.family] += 1
                leaked[pair.family] += derived
    result = {
        "info_files": len(infos),
        "grouped_rows": rows,
        "qa_pairs": sum(total.values()),
        "qa_pairs_per_row": round(sum(total.values()) / rows, 2),
        "answers_derivable_from_earlier_answers": sum(leaked.values()),
        "fraction": round(sum(leaked.values()) / sum(total.values()), 3),
        "by_family": {f: f"{leaked[f]}/{total[f]}" for f in total},
    }
    from stk_vqa.fileio import atomic_write_json

    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
