"""QA generation speed, whole processes: the original project's ``generate_qa.py`` way vs ``stk-vqa generate``.

The split: 5,376 frames (the 6 real reference info files of ``tests/data/reference`` copied 896 times under new frame
ids; the issue's figure used the 256 real validation files x 21), info files only (labels for the course's 150x100
images). Each way runs as its own process, start-up and JSON writing included, alternately, ``--repeats`` times; the
best time of each is kept (the machine may be shared: the load average is recorded):

* ``reference`` (the baseline, a stand-in for the course's ``generate_qa.py``): the info file re-read and re-parsed
  for every view, one process, written with ``json.dump(records, f, indent=2)``;
* ``ours``: ``stk-vqa generate`` with its defaults (each file parsed once; a process pool from 2 cores and 1,000
  frames; orjson writing), and ``ours_1_process`` (``--num_workers 1``).

All three write the same records (checked; ours are byte-identical to the reference's file plus a final newline).

    python benchmarks/bench_generate.py [--frames 5376] [--out benchmarks/results/generate.json]
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

import subprocess  # noqa: E402
import sys  # noqa: E402

from stk_vqa.data.generate import scan_split  # noqa: E402
from stk_vqa.data.info_file import load_frame  # noqa: E402
from stk_vqa.data.questions import generate_view_qa  # noqa: E402
from stk_vqa.fileio import atomic_write_json  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE = REPO_ROOT / "tests" / "data" / "reference"


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


def reference_process(split_dir: str, out: str) -> None:
    """The baseline's whole run (``--reference_child``): generate, then ``json.dump(..., indent=2)``."""
    records = reread_per_view(Path(split_dir))
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(records, handle, indent=2)


def timed_process(command: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=5376)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference", default=str(REFERENCE))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "generate.json"))
    parser.add_argument("--reference_child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_child:
        return reference_process(*args.reference_child)
    infos = sorted(Path(args.reference).glob("*_info.json"))
    python = sys.executable
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "train"
        split.mkdir()
        for i in range(args.frames):
            shutil.copy(infos[i % len(infos)], split / f"{i:05x}_info.json")
        outs = {name: Path(tmp) / f"{name}.json" for name in ("reference", "ours", "ours_1_process")}
        ours = [
            python,
            "-m",
            "stk_vqa.cli",
            "generate",
            "--data_dir",
            tmp,
            "--data_split",
            "train",
            "--progress",
            "false",
        ]
        commands = {
            "reference": [python, __file__, "--reference_child", str(split), str(outs["reference"])],
            "ours": [*ours, "--output_file", str(outs["ours"])],
            "ours_1_process": [*ours, "--output_file", str(outs["ours_1_process"]), "--num_workers", "1"],
        }
        best = {name: float("inf") for name in commands}
        for _ in range(args.repeats):
            for name, command in commands.items():
                best[name] = min(best[name], timed_process(command))
        load.append(os.getloadavg())
        written = {name: path.read_bytes() for name, path in outs.items()}
    assert written["ours"] == written["ours_1_process"] == written["reference"] + b"\n", "different QA pairs"
    records = json.loads(written["ours"])
    result = {
        "benchmark": "qa_generation_whole_process",
        "frames": args.frames,
        "views_with_questions": len({r["image_file"] for r in records}),
        "qa_pairs": len(records),
        "baseline": "reference: generate_qa.py's way (info file re-read per view, 1 process, json.dump indent=2)",
        "reference_s": round(best["reference"], 2),
        "ours_s": round(best["ours"], 2),
        "ours_1_process_s": round(best["ours_1_process"], 2),
        "speedup_vs_reference": round(best["reference"] / best["ours"], 2),
        "speedup_1_process_vs_reference": round(best["reference"] / best["ours_1_process"], 2),
        "repeats": args.repeats,
        "load_average_before_after": load,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
