"""Dataset build at the course's train size: 5,250 frames x 10 views = 52,500 images, ~480k QA pairs.

The split is made of copies: the real reference info files (labels) cycled under new frame ids, and the bundled
sample's real 150x100 renders cycled as images (hard links). It measures the wall time of ``stk-vqa build`` in a
child process and the peak RSS of that process, split into anonymous memory (the Python side) and file-backed pages
(the memory-mapped Arrow cache). Baseline (named ``num_proc_1``): the build in one process; then ``--num_proc 2``.

    python benchmarks/bench_build.py [--frames 5250] [--out benchmarks/results/build.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "reference"
SAMPLE_IMAGES = REPO / "stk_vqa" / "data" / "sample" / "train"


def make_split(root: Path, frames: int) -> int:
    infos = sorted(REFERENCE.glob("*_info.json"))
    images = sorted(SAMPLE_IMAGES.glob("*_im.jpg"))
    split = root / "train"
    split.mkdir(parents=True)
    k = 0
    for i in range(frames):
        fid = f"{i:05x}"
        shutil.copy(infos[i % len(infos)], split / f"{fid}_info.json")
        for v in range(10):
            os.link(images[k % len(images)], split / f"{fid}_{v:02d}_im.jpg")  # hard links: no extra disk
            k += 1
    return k


def _rss_kb(pid: int) -> tuple[int, int]:
    """(RssAnon, RssFile) of a process in kB: anonymous memory vs memory-mapped file pages."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    values = dict(line.split(":", 1) for line in status.splitlines() if line.startswith(("RssAnon", "RssFile")))
    return tuple(int(values.get(k, "0 kB").split()[0]) for k in ("RssAnon", "RssFile"))


def run_build(data: Path, out: Path, num_proc: int) -> dict:
    cmd = [sys.executable, "-m", "stk_vqa.cli", "build", "--data_dir", str(data), "--splits", "train",
           "--out_dir", str(out), "--num_proc", str(num_proc), "--overwrite"]  # fmt: skip
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    start = time.perf_counter()
    peak_anon = peak_file = 0
    with tempfile.TemporaryFile("w+") as log:
        child = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        while child.poll() is None:
            anon, mapped = _rss_kb(child.pid)
            peak_anon, peak_file = max(peak_anon, anon), max(peak_file, mapped)
            time.sleep(0.1)
        seconds = time.perf_counter() - start
        log.seek(0)
        output = log.read()
    if child.returncode != 0:
        raise RuntimeError(output[-3000:])
    line = next(line for line in output.splitlines() if "rows written" in line)
    size = sum(p.stat().st_size for p in (out / "data").glob("*.parquet"))
    return {"seconds": round(seconds, 1), "main_process_peak_rss_anon_mb": round(peak_anon / 1024, 1),
            "main_process_peak_rss_file_mb": round(peak_file / 1024, 1), "summary": line.strip("= "),
            "parquet_mb": round(size / 1e6, 1), "shards": len(list((out / "data").glob("*.parquet")))}  # fmt: skip


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=5250)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "build.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = make_split(tmp / "data", args.frames)
        one = run_build(tmp / "data", tmp / "out1", 1)
        two = run_build(tmp / "data", tmp / "out2", 2)
    result = {
        "benchmark": "dataset_build",
        "frames": args.frames,
        "images": images,
        "baseline": "num_proc_1",
        "num_proc_1": one,
        "num_proc_2": two,
        "speedup_num_proc_2": round(one["seconds"] / two["seconds"], 2),
        "note": "RSS of the build's main process sampled every 0.1 s from /proc: anonymous memory (the Python side) "
        "vs file-backed pages (the memory-mapped Arrow cache, which the kernel can drop)",
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    from stk_vqa.fileio import atomic_write_json

    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
