"""Render throughput, stalls included: ``stk-vqa render`` end to end (engine start, races, labels, JPEGs, info files).

Main run: ``--views_total`` views (default 1,000 = 100 frames x 10 views, 10 karts, course defaults otherwise) on
``--tracks`` with ``--workers`` race processes, timed from the call to the last file; views/s = views written /
wall seconds. Longest step: the largest ``render_seconds`` of a frame (engine steps + read-back + labels between
two sampled frames). Also the share of views with >= 1 kart box.

Baseline (named ``anisotropic_on``): the same short render (``--short_frames`` frames x 2 views on
``--short_track``) with Mesa's anisotropic filtering left on (the engine's own setting), against ours
(``MESA_EXTENSION_OVERRIDE=-GL_EXT_texture_filter_anisotropic``, the default); ratio = ours / baseline views/s.
A stalled baseline race is cut by the watchdog after ``--stall_timeout`` s; its lost frames count as not written.

    python benchmarks/bench_render.py [--views_total 1000] [--workers 2] [--out benchmarks/results/render.json]
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

from stk_vqa.fileio import atomic_write_json
from stk_vqa.render.cli import render
from stk_vqa.render.config import RenderConfig
from stk_vqa.render.game_data import engine_version


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed_render(out: Path, **kwargs) -> dict:
    load_before = load_avg()
    start = time.perf_counter()
    summary = render(RenderConfig(out=str(out), split="bench", **kwargs))
    wall = time.perf_counter() - start
    infos = [json.loads(p.read_text()) for p in sorted((out / "bench").glob("*_info.json"))]
    views = sum(len(i["detections"]) for i in infos)
    kart_views = sum(any(d[0] == 1 for d in v) for i in infos for v in i["detections"])
    steps = [i["render_seconds"] for i in infos]
    return {
        "frames": len(infos),
        "views": views,
        "wall_s": round(wall, 2),
        "views_per_s": round(views / wall, 3) if wall else None,
        "longest_step_s": max(steps) if steps else None,
        "median_step_s": sorted(steps)[len(steps) // 2] if steps else None,
        "views_with_kart_box": kart_views,
        "share_views_with_kart_box": round(kart_views / views, 4) if views else None,
        "lost_frames": 0 if summary is None else summary["lost"],
        "errors": [] if summary is None else summary["errors"],
        "load_avg_before": load_before,
        "load_avg_after": load_avg(),
    }


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--views_total", type=int, default=1000)
    parser.add_argument("--views", type=int, default=10)
    parser.add_argument("--karts", type=int, default=10)
    parser.add_argument("--tracks", default="lighthouse,zengarden")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--race_frames", type=int, default=50)
    parser.add_argument("--short_track", default="lighthouse")  # stalled for minutes with the extension on
    parser.add_argument("--short_frames", type=int, default=30)
    parser.add_argument("--stall_timeout", type=float, default=240.0)
    parser.add_argument("--skip_baseline", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/render.json")
    args = parser.parse_args()

    tracks = [t for t in args.tracks.split(",") if t]
    frames_per_track = -(-args.views_total // (args.views * len(tracks)))
    result = {
        "command": "python benchmarks/bench_render.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k not in {"skip_baseline"}),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "engine": {"package": "PySuperTuxKart", "version": engine_version(), "gl": "Mesa llvmpipe (software)"},
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench_render_"))
    try:
        result["main"] = {
            "tracks": tracks,
            "frames_per_track": frames_per_track,
            "views_per_frame": args.views,
            "karts": args.karts,
            "workers": args.workers,
            "race_frames": args.race_frames,
            "image_size": [150, 100],
            "label_size": [600, 400],
            "step_interval": 10,
            **timed_render(
                tmp / "main",
                tracks=tracks,
                frames=frames_per_track,
                views=args.views,
                karts=args.karts,
                workers=args.workers,
                race_frames=args.race_frames,
                stall_timeout=args.stall_timeout,
            ),
        }
        print(json.dumps(result["main"], indent=1))
        if not args.skip_baseline:
            short = dict(
                tracks=args.short_track,
                frames=args.short_frames,
                views=2,
                karts=5,
                workers=1,
                stall_timeout=args.stall_timeout,
            )
            ours = timed_render(tmp / "short_off", **short)
            base = timed_render(tmp / "short_on", anisotropic=True, **short)
            result["anisotropic"] = {
                "render": {**short, "track": short.pop("tracks")},
                "ours_anisotropic_off": ours,
                "baseline_anisotropic_on": base,
                "ratio_views_per_s_ours_over_baseline": (
                    round(ours["views_per_s"] / base["views_per_s"], 2) if base["views_per_s"] else None
                ),
                "ratio_median_step_baseline_over_ours": (
                    round(base["median_step_s"] / ours["median_step_s"], 2)
                    if base["median_step_s"] and ours["median_step_s"]
                    else None
                ),
                "ratio_longest_step_baseline_over_ours": (
                    round(base["longest_step_s"] / ours["longest_step_s"], 2)
                    if base["longest_step_s"] and ours["longest_step_s"]
                    else None
                ),
            }
            print(json.dumps(result["anisotropic"], indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_json(args.out, result, indent=1)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
