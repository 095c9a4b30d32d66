"""Training speed and peak memory on SmolVLM-256M's full shape (random weights): the original recipe vs ours.

Each configuration trains a few steps of the real code path (``stk_vqa.training.build_trainer`` on
``recipes/smolvlm_lora.yaml`` with overrides) in its own process, so peak memory is its own:

* ``original`` (the baseline, as the original project trained): eager attention, LoRA on every linear layer
  (``all-linear``, vision tower and connector included), each row tokenised and image-processed on its own and then
  padded (per-sample processing);
* ``ours_no_cache``: SDPA, LoRA on the text model only (vision tower frozen, encoded under no grad), rows tokenised
  once (``preprocess_rows``), uint8 images resized + normalised on the device, batches grouped by image
  (``group_batches_by_image``: each image of the dataset carries ``--questions_per_image`` questions, as the real data
  does, and is encoded once per batch it appears in);
* ``ours_cache``: rows tokenised once and ``vision_feature_cache``: the connector output of every distinct image was
  computed once beforehand (timed separately as ``cache_build``), the vision tower does not run in the train step;
* ``ours_cache_compile`` (only when named in ``--configs``): ``ours_cache`` with ``torch_compile``;
* ``ours_grouped_cache`` (grouped rows, one image with all its QA turns per row, as ``--group_by_image`` builds):
  counted per QA pair. Under causal attention a later question in a row sees the earlier answers (see
  ``docs/notes/issue-6-training.md``), so it is reported beside the per-pair figures, not as the headline.

Samples are QA pairs (rows for per-pair data), timed from the end of the warm-up steps to the end of the last timed
step (data loading included). Ratios are against ``original`` measured in the same run; ``--ours_batch_size`` gives
our configurations the lean recipe's micro-batch while the baseline keeps the original's ``--batch_size``. One more
step after the timed ones counts the ATen ops dispatched from the host (``host_ops_per_step``) and, with
``--profile``, records the top host costs (torch.profiler, by self CPU time).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_train.py                      # CPU, 1 thread, ~4-5 min
    benchmarks/gpu.sh                         # one CUDA device: 50 timed steps, ours at 64 rows/step, --profile
    python benchmarks/bench_train.py --size tiny --steps 2 --out /tmp/t.json     # seconds: checks the script runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from transformers import TrainerCallback  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

RECIPE = REPO_ROOT / "recipes" / "smolvlm_lora.yaml"
BASELINE = "original"
# Questions and answers of the project's families (typical lengths); each benchmark image carries all of them.
QA_PAIRS = [
    ("What kart is the ego car?", "tux"),
    ("How many karts are there in the scenario?", "4"),
    ("What track is this?", "lighthouse"),
    ("Is nolok to the left or right of the ego car?", "left"),
    ("Is nolok in front of or behind the ego car?", "front"),
    ("Where is nolok relative to the ego car?", "front and left"),
    ("How many karts are to the left of the ego car?", "2"),
    ("How many karts are in front of the ego car?", "1"),
    ("How many karts are behind the ego car?", "2"),
]
CONFIGS = {
    "original": {
        "what": "eager attention, LoRA (dropout 0.05) on all linear layers incl. vision tower + connector, "
        "per-sample processing (TRL's collator on one row at a time)",
        "flags": ["--attn_implementation", "eager", "--lora_scope", "all", "--lora_target_modules", "all-linear",
                  "--lora_dropout", "0.05", "--vision_feature_reuse", "false", "--vision_feature_cache", "none",
                  "--preprocess_rows", "false", "--group_batches_by_image", "false"],
        "per_sample": True,
        "baseline": True,
    },
    "ours_no_cache": {
        "what": "SDPA, text-only LoRA (vision frozen), rows tokenised once, uint8 images resized + normalised on the "
        "device, batches grouped by image (each image encoded once for its questions in the batch)",
        "flags": ["--preprocess_rows", "true", "--vision_feature_reuse", "true", "--vision_feature_cache", "none",
                  "--group_batches_by_image", "true"],
    },
    "ours_cache": {
        "what": "SDPA, text-only LoRA, rows tokenised once, vision_feature_cache (vision tower not run in the step)",
        "flags": ["--preprocess_rows", "true", "--vision_feature_reuse", "true", "--vision_feature_cache", "{cache}",
                  "--group_batches_by_image", "false"],
        "uses_cache": True,
    },
    "ours_cache_compile": {
        "what": "ours_cache with torch_compile (not in the default set: its compile time needs a GPU run to pay)",
        "flags": ["--preprocess_rows", "true", "--vision_feature_reuse", "true", "--vision_feature_cache", "{cache}",
                  "--group_batches_by_image", "false", "--torch_compile", "true"],
        "uses_cache": True,
        "optional": True,
    },
    "ours_grouped_cache": {
        "what": "grouped rows (one image + all its QA turns per row), SDPA, text-only LoRA, vision_feature_cache",
        "flags": ["--vision_feature_reuse", "true", "--vision_feature_cache", "{cache}", "--preprocess_rows", "true",
                  "--group_batches_by_image", "false"],
        "uses_cache": True,
        "grouped": True,
    },
}  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# Data


def noise_image(seed: int, size=(150, 100)):
    """A distinct 150x100 RGB image per seed (the course images' size)."""
    import random

    from PIL import Image

    rng = random.Random(seed)
    return Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))


def write_dataset(out: Path, n_images: int, grouped: bool, questions_per_image: int, rows: int | None = None) -> Path:
    """A train split in the builder's row format: per-pair rows (one QA each; ``rows`` of them, each image carrying
    ``questions_per_image`` questions, as the real data does) or grouped rows (one image with
    ``questions_per_image`` QA turns)."""
    import datasets

    from stk_vqa.data.rows import chat_messages

    table = {"images": [], "messages": []}
    count = n_images if grouped else rows
    for index in range(count):
        if grouped:
            image, pairs = index, [QA_PAIRS[(index + k) % len(QA_PAIRS)] for k in range(questions_per_image)]
        else:
            image, pairs = index // questions_per_image, [QA_PAIRS[index % len(QA_PAIRS)]]
        table["images"].append([noise_image(image)])
        table["messages"].append(chat_messages(pairs))
    text = datasets.Value("string")
    features = datasets.Features(
        {
            "images": datasets.Sequence(datasets.Image()),
            "messages": [{"role": text, "content": [{"type": text, "text": text}]}],
        }
    )
    (out / "data").mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(table, features=features).to_parquet(str(out / "data" / "train-00000-of-00001.parquet"))
    return out


# --------------------------------------------------------------------------------------------------------------------
# One configuration, in its own process


class PerSampleCollator:
    """The original project's data path: each row tokenised and image-processed alone, then right-padded."""

    def __init__(self, collator, pad_token_id: int):
        self.collator = collator
        self.pad_token_id = pad_token_id

    def __call__(self, examples):
        import torch

        parts = [self.collator([example]) for example in examples]
        length = max(part["input_ids"].shape[1] for part in parts)
        pads = {"input_ids": self.pad_token_id, "attention_mask": 0, "labels": -100}
        batch = {}
        for key, value in pads.items():
            batch[key] = torch.cat(
                [torch.nn.functional.pad(p[key], (0, length - p[key].shape[1]), value=value) for p in parts]
            )
        for key in ("pixel_values", "pixel_attention_mask"):
            if key in parts[0]:
                batch[key] = torch.cat([p[key] for p in parts])
        return batch


def batch_size(args, config: dict) -> int:
    """Rows per step: grouped rows their own; the baseline the original recipe's; ours ``--ours_batch_size``."""
    if "batch_size" in config:
        return config["batch_size"]
    return args.batch_size if config.get("baseline") else (args.ours_batch_size or args.batch_size)


def trainer_argv(args, config: dict, dataset: Path, output_dir: Path, cache: Path) -> list[str]:
    argv = [
        str(RECIPE),
        "--model_name_or_path", str(args.model),
        "--dataset_name", str(dataset),
        "--output_dir", str(output_dir),
        "--max_steps", str(args.warmup + args.steps + 1 + args.profile),  # + the op-count and profiled steps
        "--per_device_train_batch_size", str(batch_size(args, config)),
        "--gradient_accumulation_steps", "1",
        "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none", "--loss_curve", "false",
        "--logging_steps", str(args.logging_steps), "--disable_tqdm", "true", "--dataloader_num_workers", str(args.workers),
        "--lr_scheduler_type", "constant", "--warmup_steps", "0", "--seed", "0",
    ]  # fmt: skip
    from stk_vqa.tiny_model import SHAPES

    argv += ["--image_size", str(SHAPES[args.size][1]["image_size"])]  # the shape's own: 512 full, 128 tiny
    if args.device == "cpu":
        argv += ["--use_cpu", "true", "--bf16", "false", "--dtype", "float32"]
    else:
        argv += ["--bf16", "true", "--dtype", "bfloat16"]
    return argv + [flag.replace("{cache}", str(cache)) for flag in config["flags"]]


def peak_memory_mb(device: str) -> dict:
    import resource

    import torch

    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device == "cuda":
        out["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def run_config(args) -> dict:
    """Train ``args.config`` for warmup + steps steps; return its figures."""
    import torch

    from stk_vqa.scripts.sft import build_trainer
    from stk_vqa.training import feature_cache, vision_features
    from stk_vqa.training.configs import parse_recipe

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    config = CONFIGS[args.config]
    work = Path(args.workdir)
    dataset = work / ("grouped" if config.get("grouped") else "per_pair")
    cache = work / "features.safetensors"

    cache_seconds = {"s": 0.0}
    original_prepare = feature_cache.prepare_feature_cache

    def timed_prepare(*a, **k):
        start = time.perf_counter()
        try:
            return original_prepare(*a, **k)
        finally:
            cache_seconds["s"] += time.perf_counter() - start

    feature_cache.prepare_feature_cache = timed_prepare
    trainer = build_trainer(*parse_recipe(trainer_argv(args, config, dataset, work / f"out-{args.config}", cache)))
    if config.get("per_sample"):
        trainer.data_collator = PerSampleCollator(
            trainer.data_collator, trainer.processing_class.tokenizer.pad_token_id
        )
    encoded = vision_features.count_encoded_images(trainer.model)

    last = args.warmup + args.steps  # the step after the timed ones: ops counted (and profiled), not timed
    clock = StepClock(args.device, encoded, last, args.profile)
    trainer.add_callback(clock)
    trainer.train()
    w = args.warmup
    ends = clock.ends[:last]
    seconds = ends[-1] - ends[w - 1]
    timed_steps = len(ends) - w
    batch = batch_size(args, config)
    qa_pairs = timed_steps * batch * (args.questions_per_image if config.get("grouped") else 1)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "config": args.config,
        "what": config["what"],
        "timed_steps": timed_steps,
        "rows_per_step": batch,
        "qa_pairs_timed": qa_pairs,
        "seconds": round(seconds, 3),
        "qa_pairs_per_s": round(qa_pairs / seconds, 4),
        "rows_per_s": round(timed_steps * batch / seconds, 4),
        "ms_per_step": round(seconds * 1000 / timed_steps, 2),
        "host_ops_per_step": clock.ops,
        "images_encoded_per_step": round((clock.encoded[last - 1] - clock.encoded[w - 1]) / timed_steps, 2),
        "cache_prepare_s": round(cache_seconds["s"], 2),
        "first_loss": round(losses[0], 4) if losses else None,
        **({"profile_top_host_ops": clock.profile} if clock.profile else {}),
        **peak_memory_mb(args.device),
    }


class OpCounter:
    """Counts the ATen operators dispatched (after autograd: what reaches kernels) while active."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                counter.count += 1
                return func(*args, **(kwargs or {}))

        self.count = 0
        self.mode = Mode()


class StepClock(TrainerCallback):
    """Step end times (synchronised on CUDA), images encoded, the op count of step ``last`` (0-based) and, when
    asked, a profiler summary of the top host costs of the step after it."""

    def __init__(self, device: str, encoded, last: int, profile: bool):
        self.device, self.encoded_fn, self.last, self.want_profile = device, encoded, last, profile
        self.ends, self.encoded = [], []
        self.ops, self.profile = None, None
        self._counter = self._profiler = None

    def on_step_begin(self, _args, state, control, **kwargs):
        import torch

        if state.global_step == self.last:
            self._counter = OpCounter()
            self._counter.mode.__enter__()
        elif state.global_step == self.last + 1 and self.want_profile:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.device == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._profiler = torch.profiler.profile(activities=activities)
            self._profiler.__enter__()

    def on_step_end(self, _args, state, control, **kwargs):
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())
        self.encoded.append(self.encoded_fn())
        if self._counter is not None:
            self._counter.mode.__exit__(None, None, None)
            self.ops, self._counter = self._counter.count, None
        if self._profiler is not None:
            self._profiler.__exit__(None, None, None)
            table = self._profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
            self.profile, self._profiler = table.splitlines(), None


def build_cache(args) -> dict:
    """Encode every distinct image of the benchmark datasets once into the feature cache (timed)."""
    import torch
    from datasets import load_dataset

    from stk_vqa.scripts.sft import build_trainer
    from stk_vqa.training.configs import parse_recipe
    from stk_vqa.training.feature_cache import prepare_feature_cache

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    trainer = build_trainer(
        *parse_recipe(trainer_argv(args, CONFIGS["ours_no_cache"], work / "per_pair", work / "x", work))
    )
    splits = [load_dataset(str(work / name), split="train") for name in ("per_pair", "grouped")]
    if args.device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    cache = prepare_feature_cache(work / "features.safetensors", trainer.model, trainer.processing_class, splits,
                                  batch_size=args.cache_batch_size, progress=False)  # fmt: skip
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"config": "cache_build", "images": len(cache), "seconds": round(seconds, 3),
            "s_per_image": round(seconds / len(cache), 4), **peak_memory_mb(args.device)}  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# Driver


def child(args, what: str) -> dict:
    command = [sys.executable, __file__, "--child", what, *args.passthrough]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    )
    if args.device == "cpu":
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    print(f"[bench_train] {what} ...", file=sys.stderr, flush=True)
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{what} failed:\n{result.stderr[-4000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"[bench_train] {what}: {figures}", file=sys.stderr, flush=True)
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--size", choices=["full", "tiny"], default="full", help="model shape (tiny: a dry run)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--batch_size", type=int, default=2, help="rows per step, the original recipe")
    parser.add_argument("--ours_batch_size", type=int, default=None, help="rows per step, ours (default: --batch_size)")
    parser.add_argument("--logging_steps", type=int, default=10, help="the trainer's logging interval (syncs)")
    parser.add_argument("--profile", action="store_true", help="profile the op-count step: top host costs")
    parser.add_argument("--grouped_batch_size", type=int, default=1, help="rows per step, grouped rows")
    parser.add_argument("--questions_per_image", type=int, default=len(QA_PAIRS), help="QA turns per grouped row")
    parser.add_argument("--steps", type=int, default=2, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--cache_batch_size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (collation)")
    default_configs = ",".join(name for name, config in CONFIGS.items() if not config.get("optional"))
    parser.add_argument("--configs", default=default_configs, help=f"comma-separated, of {list(CONFIGS)}")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "train.json"))
    parser.add_argument("--workdir", default=None, help="(internal) folder with model, datasets and cache")
    parser.add_argument("--model", default=None, help="(internal) model folder")
    parser.add_argument("--child", default=None, help="(internal) run one configuration and print its JSON")
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (the first step pays one-off costs)")

    if args.child:
        CONFIGS["ours_grouped_cache"]["batch_size"] = args.grouped_batch_size
        if args.child == "cache_build":
            print(json.dumps(build_cache(args)))
        else:
            args.config = args.child
            print(json.dumps(run_config(args)))
        return None

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or BASELINE not in configs:
        parser.error(f"--configs: unknown {unknown}; {BASELINE!r} (the baseline) must be included")
    from stk_vqa.fileio import atomic_write_json
    from stk_vqa.tiny_model import make_tiny_model

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_train.") as tmp:
        work = Path(tmp)
        model = make_tiny_model(str(work / "model"), size=args.size, seed=0)
        steps = args.warmup + args.steps + 1 + args.profile
        rows_needed = steps * max(args.batch_size, args.ours_batch_size or 0)
        write_dataset(work / "per_pair", n_images=0, grouped=False, questions_per_image=args.questions_per_image,
                      rows=rows_needed)  # fmt: skip
        write_dataset(work / "grouped", n_images=steps * args.grouped_batch_size, grouped=True,
                      questions_per_image=args.questions_per_image)  # fmt: skip
        args.passthrough = [
            "--device", args.device, "--size", args.size, "--threads", str(args.threads),
            "--batch_size", str(args.batch_size), "--grouped_batch_size", str(args.grouped_batch_size),
            "--ours_batch_size", str(args.ours_batch_size or args.batch_size), "--logging_steps", str(args.logging_steps),
            *(["--profile"] if args.profile else []),
            "--questions_per_image", str(args.questions_per_image), "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--cache_batch_size", str(args.cache_batch_size), "--workers", str(args.workers),
            "--workdir", str(work), "--model", model,
        ]  # fmt: skip
        cache_build = child(args, "cache_build") if any(CONFIGS[c].get("uses_cache") for c in configs) else None
        results = {name: child(args, name) for name in configs}

    base = results[BASELINE]
    per_image_encode_s = cache_build["s_per_image"] if cache_build else None
    for name, figures in results.items():
        figures["speedup_vs_original"] = round(figures["qa_pairs_per_s"] / base["qa_pairs_per_s"], 2)
        figures["peak_rss_vs_original"] = round(figures["peak_rss_mb"] / base["peak_rss_mb"], 2)
        if CONFIGS[name].get("uses_cache") and per_image_encode_s is not None:
            # one epoch over a dataset with len(QA_PAIRS) questions per image: the cache build, spread over them
            per_pair_s = 1 / figures["qa_pairs_per_s"] + per_image_encode_s / len(QA_PAIRS)
            figures["qa_pairs_per_s_incl_cache_build_1_epoch"] = round(1 / per_pair_s, 4)
            figures["speedup_vs_original_incl_cache_build_1_epoch"] = round(
                figures["qa_pairs_per_s_incl_cache_build_1_epoch"] / base["qa_pairs_per_s"], 2
            )
    import torch
    import transformers

    summary = {
        "benchmark": "training",
        "model": f"SmolVLM-256M architecture ({args.size} shape, random weights)",
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0),
        "dtype": "float32" if args.device == "cpu" else "bfloat16",
        "torch_threads": args.threads if args.device == "cpu" else None,
        "dataloader_workers": args.workers,
        "baseline": BASELINE,
        "rows_per_step": args.batch_size,
        "timed_steps": args.steps,
        "warmup_steps": args.warmup,
        "questions_per_image_for_amortisation": len(QA_PAIRS),
        "cache_build": cache_build,
        "results": results,
        "headline": {name: figures["speedup_vs_original"] for name, figures in results.items() if name != BASELINE},
        "wall_s": round(time.perf_counter() - started, 1),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    atomic_write_json(args.out, summary)
    print(f"{'config':<20} {'QA/s':>9} {'x original':>11} {'peak RSS MB':>12} {'images/step':>12}")
    for name, figures in results.items():
        print(f"{name:<20} {figures['qa_pairs_per_s']:>9.4f} {figures['speedup_vs_original']:>11.2f} "
              f"{figures['peak_rss_mb']:>12.0f} {figures['images_encoded_per_step']:>12.2f}")  # fmt: skip
    if cache_build:
        print(f"cache build: {cache_build['images']} images in {cache_build['seconds']} s "
              f"({cache_build['s_per_image']} s/image)")  # fmt: skip
    print(f"written: {args.out}")
    return summary


if __name__ == "__main__":
    main()
