"""QA generation speed on a train-sized split (5,250 frames x 10 views of info files).

Baseline (named ``reread_per_view``): the original project's way, which re-read and re-parsed the info
file for every view, in one process. Ours: ``stk_vqa.data.generate.iter_split_qa`` with its defaults (each file
parsed once; a process pool from 2 cores up), and in one process for comparison. All make the same QA pairs
(checked). The split is made of synthetic copies of the real reference info files under new frame ids.

    python benchmarks/bench_generate.py [--frames 5250] [--out benchmarks/results/generate.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from stk_vqa.data.generate import iter_split_qa, qa_records, scan_split  # noqa: E402
from stk_vqa.data.questions import generate_view_qa  # noqa: E402
from stk_vqa.data.scene import load_frame  # noqa: E402
from stk_vqa.fileio import atomic_write_json  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "reference"


def reread_per_view(split_dir: Path) -> list[dict]:
    records = []
    for files in scan_split(split_dir):
        num_views = load_frame(files.info_path).num_views
        for view in range(num_views):
            frame = load_frame(files.info_path)  # re-read for every view, as the original did
            for p in generate_view_qa(frame, view):
                records.append(
                    {
                        "image_file": f"{split_dir.name}/{files.image_name(view)}",
                        "question": p.question,
                        "answer": p.answer,
                        "family": p.family,
                    }
                )
    return records


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=5250)
    parser.add_argument("--reference", default=str(REFERENCE))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "generate.json"))
    args = parser.parse_args()
    infos = sorted(Path(args.reference).glob("*_info.json"))
    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "train"
        split.mkdir()
        for i in range(args.frames):
            shutil.copy(infos[i % len(infos)], split / f"{i:05x}_info.json")
        baseline, t_base = timed(reread_per_view, split)
        ours, t_ours = timed(lambda s: qa_records(iter_split_qa(s, progress=False)), split)
        serial, t_serial = timed(lambda s: qa_records(iter_split_qa(s, num_workers=1, progress=False)), split)
    assert baseline == ours == serial, "the two ways made different QA pairs"
    result = {
        "benchmark": "qa_generation",
        "frames": args.frames,
        "views_with_questions": len({r["image_file"] for r in ours}),
        "qa_pairs": len(ours),
        "baseline": "reread_per_view (original project: info file re-read per view, 1 process)",
        "baseline_s": round(t_base, 2),
        "ours_s": round(t_ours, 2),
        "ours_1_process_s": round(t_serial, 2),
        "ours_frames_per_s": round(args.frames / t_ours, 1),
        "ours_qa_pairs_per_s": round(len(ours) / t_ours),
        "speedup_vs_baseline": round(t_base / t_ours, 2),
        "speedup_1_process_vs_baseline": round(t_base / t_serial, 2),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
