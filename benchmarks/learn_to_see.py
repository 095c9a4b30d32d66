#!/usr/bin/env python
"""Does a model trained with stk-vqa read pixels? The pipeline end to end, as a user runs it, against the blind prior.

    python benchmarks/learn_to_see.py                          # CPU; ~1.5 h on 2 cores at the default size
    python benchmarks/learn_to_see.py --device cuda            # the same on a GPU
    python benchmarks/learn_to_see.py --frames 4 --train_seeds 1 --epochs 1   # a small pilot

Stages (each resumable: a finished stage is skipped on a re-run of the same command):

1. ``stk-vqa render``: races on the training tracks (``--train_seeds`` races per track) -> ``frames/seed-K/train``;
   one more race per training track (another seed) -> ``frames/validation/valid``: other races of the same tracks;
   races on ``--unseen_tracks`` -> ``frames/unseen/unseen``.
2. ``stk-vqa build``: one question per row (no grouping, so no answer leaks from earlier turns), Hub splits
   ``train`` / ``validation`` / ``unseen``.
3. The control dataset: ``stk-vqa build --shuffle_images``, the same rows with the train split's images shuffled
   across rows (seeded); questions, answers and evaluation splits unchanged. A model that learns from pixels must
   beat it; it must stay at the prior.
4. ``stk-vqa make-tiny-model --size small``: a 4.3M-parameter Idefics3, random weights.
5. ``scripts/sft.py recipes/learn_to_see_cpu.yaml`` twice, real and shuffled, from scratch (vision tower included),
   checkpoints every ``save_steps``.
6. ``stk-vqa evaluate`` of every checkpoint on a sample of the validation split (the learning curve), then of the
   last one on all of ``validation`` and ``unseen``, beside the blind prior; the course's prefix rule.

Writes ``benchmarks/results/learn_to_see.json`` (``{"validation": {family | "overall": {n, prior, real,
shuffled}}, "unseen_tracks": {...}, "minutes": ..., "stage_minutes": {...}}``) and ``benchmarks/results/learn_to_see_curve.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPE = REPO_ROOT / "recipes" / "learn_to_see_cpu.yaml"
RESULTS = REPO_ROOT / "benchmarks" / "results"
UNSEEN_TRACKS = "hacienda,snowtuxpeak,zengarden"
SKIP_TRACKS = "mines"  # its race crashes (SIGSEGV) at the start with pysupertuxkart 1.1.2 + Debian's 1.4 data
FAMILIES = ("ego_kart", "kart_count", "track", "left_right", "front_back", "relative_position", "directional_count")


def stage(title: str) -> float:
    print(f"\n=== {title}", flush=True)
    return time.perf_counter()


def stk_vqa(*args: str) -> None:
    """Run an ``stk-vqa`` command as a user would (its own process)."""
    subprocess.run([sys.executable, "-m", "stk_vqa.cli", *args], check=True)


def render(work: Path, args) -> list[str]:
    """Render every race (skipping finished frames) and return the split folders for ``stk-vqa build``."""
    from stk_vqa.render.game_data import available_tracks

    unseen = [t for t in args.unseen_tracks.split(",") if t]
    skip = set(unseen) | set(SKIP_TRACKS.split(","))
    tracks = [t for t in (args.tracks.split(",") if args.tracks else available_tracks()) if t not in skip]
    common = ["--views", str(args.views), "--karts", str(args.karts), "--workers", str(args.workers)]
    folders = []
    for seed in range(args.train_seeds):
        out = work / "frames" / f"seed-{seed}"
        stk_vqa("render", "--out", str(out), "--split", "train", "--tracks", ",".join(tracks),
                "--frames", str(args.frames), "--seed", str(seed), *common)  # fmt: skip
        folders.append(f"seed-{seed}/train")
    stk_vqa("render", "--out", str(work / "frames" / "validation"), "--split", "valid", "--tracks", ",".join(tracks),
            "--frames", str(args.eval_frames), "--seed", "1000", *common)  # fmt: skip
    stk_vqa("render", "--out", str(work / "frames" / "unseen"), "--split", "unseen", "--tracks", ",".join(unseen),
            "--frames", str(args.eval_frames), "--seed", "2000", *common)  # fmt: skip
    return [*folders, "validation/valid", "unseen/unseen"]


def train(run_dir: Path, model_dir: Path, dataset_dir: Path, args) -> None:
    if (run_dir / "model.safetensors").is_file():
        return  # finished earlier
    resume = ["--resume_from_checkpoint", "last"] if list(run_dir.glob("checkpoint-*/trainer_state.json")) else []
    resume = resume or ["--overwrite_output_dir", "true"]  # a run killed before its first checkpoint starts over
    command = [sys.executable, str(REPO_ROOT / "scripts" / "sft.py"), str(RECIPE),
               "--model_name_or_path", str(model_dir), "--dataset_name", str(dataset_dir), "--output_dir", str(run_dir),
               "--num_train_epochs", str(args.epochs), "--save_steps", str(args.save_steps), "--seed", str(args.seed),
               *resume]  # fmt: skip
    if args.device == "cuda":
        command += ["--use_cpu", "false", "--bf16", "true", "--dtype", "bfloat16"]
    subprocess.run(command, check=True)


def evaluate(model_dir: Path, dataset_dir: Path, split: str, out_dir: Path, args, max_samples: int | None) -> dict:
    """``stk-vqa evaluate`` of one full model folder; returns results.json."""
    if not (out_dir / "results.json").is_file():
        command = ["evaluate", "--data", str(dataset_dir), "--model", str(model_dir), "--split", split,
                   "--out_dir", str(out_dir), "--overwrite", "--no_progress", "--seed", str(args.seed),
                   "--batch_size", "64", "--device", args.device]  # fmt: skip
        if max_samples:
            command += ["--max_samples", str(max_samples)]
        stk_vqa(*command)
    return json.loads((out_dir / "results.json").read_text())


def accuracy(results: dict, model: str = "base") -> dict[str, float | None]:
    """Per family and overall, the course's prefix rule (``reference_accuracy``) of ``model`` (``base``: the evaluated
    model folder itself, no adapter)."""
    entry = results["models"][model]
    out = {family: block["reference_accuracy"] for family, block in entry["families"].items()}
    out["overall"] = entry["overall"]["reference_accuracy"]
    return out


def table(real: dict, shuffled: dict) -> dict:
    """``{family | overall: {n, prior, real, shuffled}}`` from the two runs' results on one split."""
    prior, ours, control = accuracy(real, "blind_prior"), accuracy(real), accuracy(shuffled)
    sizes = {family: block["n"] for family, block in real["models"]["blind_prior"]["families"].items()}
    sizes["overall"] = real["models"]["blind_prior"]["overall"]["n"]
    return {
        key: {"n": sizes[key], "prior": prior[key], "real": ours[key], "shuffled": control[key]}
        for key in [*[f for f in FAMILIES if f in sizes], "overall"]
    }


class StageClock:
    """Minutes spent per stage, kept in ``WORK/stage_minutes.json``: a resumed run adds what it spends to what the
    earlier runs of the same work folder spent, so ``minutes`` is the cost of the results, not of the last call."""

    def __init__(self, work: Path):
        self.path = work / "stage_minutes.json"
        self.minutes: dict[str, float] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def record(self, name: str, started: float) -> None:
        from stk_vqa.fileio import atomic_write_json

        self.minutes[name] = self.minutes.get(name, 0.0) + (time.perf_counter() - started) / 60
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, self.minutes)


def count_views(frames: Path, splits: list[str]) -> dict[str, int]:
    """Rendered views (images) per split folder."""
    return {split: sum(1 for _ in (frames / split).glob("*_im.jpg")) for split in splits}


def checkpoints(run_dir: Path) -> list[Path]:
    found = [p for p in run_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def learning_curve(work: Path, dataset: Path, control: Path, args) -> dict[str, dict[int, dict]]:
    """Validation accuracy per family of every checkpoint of both runs (a fixed sample of questions)."""
    curve: dict[str, dict[int, dict]] = {"real": {}, "shuffled": {}}
    for run, data in (("real", dataset), ("shuffled", control)):
        for checkpoint in checkpoints(work / run):
            step = int(checkpoint.name.split("-")[1])
            out = work / "eval" / f"{run}-{checkpoint.name}"
            results = evaluate(checkpoint, data, "validation", out, args, args.curve_samples)
            curve[run][step] = accuracy(results)
            curve.setdefault("prior", {})[0] = accuracy(results, "blind_prior")
    return curve


def plot_curve(curve: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    keys = [*FAMILIES, "overall"]
    figure = Figure(figsize=(12, 6), dpi=100)
    for index, key in enumerate(keys):
        axes = figure.add_subplot(2, 4, index + 1)
        for run, style in (("real", "-o"), ("shuffled", "--s")):
            steps = sorted(curve[run])
            values = [curve[run][s].get(key) for s in steps]
            axes.plot(steps, [v if v is not None else float("nan") for v in values], style, label=run, markersize=3)
        prior = curve.get("prior", {}).get(0, {}).get(key)
        if prior is not None:
            axes.axhline(prior, color="grey", linewidth=1, label="blind prior")
        axes.set_title(key, fontsize=9)
        axes.set_ylim(0, 1)
        axes.tick_params(labelsize=7)
        if index == 0:
            axes.legend(fontsize=7)
    figure.suptitle("learn to see: validation accuracy (course rule) vs training step, real vs shuffled images")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", default="outputs/learn_to_see")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--tracks", default="", help="training tracks (default: every track but the unseen ones)")
    parser.add_argument("--unseen_tracks", default=UNSEEN_TRACKS)
    parser.add_argument("--train_seeds", type=int, default=6, help="races per training track")
    parser.add_argument("--frames", type=int, default=30, help="frames per training race")
    parser.add_argument("--eval_frames", type=int, default=10, help="frames per validation / unseen race")
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--karts", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--save_steps", type=int, default=500)
    parser.add_argument("--curve_samples", type=int, default=700, help="validation questions per curve point")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default="", help="frames already rendered (skip stage 1): split folders as "
                                                       "--splits would name them, e.g. the bundled sample")  # fmt: skip
    parser.add_argument("--splits", default="", help="with --data_dir: the build's --splits")
    parser.add_argument("--out", default=str(RESULTS / "learn_to_see.json"))
    args = parser.parse_args(argv)

    from stk_vqa.fileio import atomic_write_json
    from stk_vqa.tiny_model import make_tiny_model

    started = time.perf_counter()
    work = Path(args.work_dir)
    clock = StageClock(work)
    t = stage("1/6 render")
    if args.data_dir:
        frames, splits = Path(args.data_dir), args.splits.split(",")
    else:
        frames, splits = work / "frames", render(work, args)
    clock.record("render", t)
    print(f"({time.perf_counter() - t:.0f} s)")

    t = stage("2/6 build (one question per row) and 3/6 the shuffled-image control")
    dataset, control = work / "dataset", work / "dataset_shuffled"
    for out, extra in ((dataset, []), (control, ["--shuffle_images"])):
        if not (out / "README.md").is_file():
            stk_vqa("build", "--data_dir", str(frames), "--splits", ",".join(splits), "--out_dir", str(out),
                    "--seed", str(args.seed), *extra)  # fmt: skip
    clock.record("build", t)
    print(f"({time.perf_counter() - t:.0f} s)")

    t = stage("4/6 model: 4.3M-parameter Idefics3, random weights")
    model = work / "model"
    if not (model / "config.json").is_file():
        make_tiny_model(str(model), size="small", seed=args.seed)

    t = stage("5/6 training from scratch: real images, then shuffled images")
    train(work / "real", model, dataset, args)
    clock.record("train_real", t)
    t_control = time.perf_counter()
    train(work / "shuffled", model, control, args)
    clock.record("train_shuffled", t_control)
    print(f"({time.perf_counter() - t:.0f} s)")

    t = stage("6/6 evaluation")
    curve = learning_curve(work, dataset, control, args)
    results = {}
    for split, key in (("validation", "validation"), ("unseen", "unseen_tracks")):
        real = evaluate(work / "real", dataset, split, work / "eval" / f"real-final-{split}", args, None)
        shuffled = evaluate(work / "shuffled", control, split, work / "eval" / f"shuffled-final-{split}", args, None)
        results[key] = table(real, shuffled)
    clock.record("evaluate", t)
    results["minutes"] = round(sum(clock.minutes.values()), 1)
    results["stage_minutes"] = {name: round(value, 1) for name, value in clock.minutes.items()}
    results["minutes_this_invocation"] = round((time.perf_counter() - started) / 60, 1)
    results["views"] = count_views(frames, splits)
    results["curve"] = {run: {str(step): values for step, values in points.items()} for run, points in curve.items()}
    results["config"] = {k: v for k, v in vars(args).items() if k not in ("out",)}
    atomic_write_json(args.out, results)
    plot_curve(curve, Path(args.out).with_name("learn_to_see_curve.png"))
    for split in ("validation", "unseen_tracks"):
        print(f"\n{split}: family  n  prior  real  shuffled")
        for family, row in results[split].items():
            cells = [f"{row[k]:.3f}" if row[k] is not None else "-" for k in ("prior", "real", "shuffled")]
            print(f"  {family:<18} {row['n']:>5}  " + "  ".join(cells))
    print(f"\nwrote {args.out} ({results['minutes']} min)")
    return results


if __name__ == "__main__":
    main()
