"""Training speed and peak memory on SmolVLM-256M's full shape (random weights): the original recipe vs ours.

Each configuration trains a few steps of the real code path (``stk_vqa.training.build_trainer`` on
``recipes/smolvlm_lora.yaml`` with overrides) in its own process, so peak memory is its own:

* ``original`` (the baseline, as the original project trained): eager attention, LoRA on every linear layer
  (``all-linear``, vision tower and connector included), each row tokenised and image-processed on its own and then
  padded (per-sample processing);
* ``ours_no_cache``: SDPA, LoRA on the text model only (vision tower frozen, encoded under no grad), batched
  processing; every row's image is encoded (random batches of a large dataset rarely share an image);
* ``ours_cache``: the same with ``vision_feature_cache``: the connector output of every distinct image was computed
  once beforehand (timed separately as ``cache_build``), the vision tower does not run in the train step;
* ``ours_grouped_cache`` (grouped rows, one image with all its QA turns per row, as ``--group_by_image`` builds):
  counted per QA pair. Under causal attention a later question in a row sees the earlier answers (see
  ``docs/notes/issue-6-training.md``), so it is reported beside the per-pair figures, not as the headline.

Samples are QA pairs (rows for per-pair data), timed from the end of the warm-up steps to the end of the last step
(data loading included). Ratios are against ``original`` measured in the same run.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_train.py                      # CPU, 1 thread, ~3-4 min
    python benchmarks/bench_train.py --device cuda --batch_size 8 --steps 10 --warmup 3 --out results/train_gpu.json
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
        "what": "eager attention, LoRA on all linear layers incl. vision tower + connector, per-sample processing",
        "flags": [
            "--attn_implementation",
            "eager",
            "--lora_scope",
            "all",
            "--lora_target_modules",
            "all-linear",
            "--vision_feature_reuse",
            "false",
            "--vision_feature_cache",
            "none",
        ],
        "per_sample": True,
    },
    "ours_no_cache": {
        "what": "SDPA, text-only LoRA (vision frozen), batched processing, every row's image encoded",
        "flags": ["--vision_feature_reuse", "true", "--vision_feature_cache", "none"],
    },
    "ours_cache": {
        "what": "SDPA, text-only LoRA, vision_feature_cache (vision tower not run in the step)",
        "flags": ["--vision_feature_reuse", "true", "--vision_feature_cache", "{cache}"],
        "uses_cache": True,
    },
    "ours_grouped_cache": {
        "what": "grouped rows (one image + all its QA turns per row), SDPA, text-only LoRA, vision_feature_cache",
        "flags": ["--vision_feature_reuse", "true", "--vision_feature_cache", "{cache}"],
        "uses_cache": True,
        "grouped": True,
    },
}


# --------------------------------------------------------------------------------------------------------------------
# Data


def noise_image(seed: int, size=(150, 100)):
    """A distinct 150x100 RGB image per seed (the course images' size)."""
    import random

    from PIL import Image

    rng = random.Random(seed)
    return Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))


def write_dataset(out: Path, n_images: int, grouped: bool, questions_per_image: int) -> Path:
    """A train split in the builder's row format: per-pair rows (one QA each, images cycling through the QA list)
    or grouped rows (one image with ``questions_per_image`` QA turns)."""
    import datasets

    from stk_vqa.data.rows import chat_messages

    rows = {"images": [], "messages": []}
    for index in range(n_images):
        if grouped:
            pairs = [QA_PAIRS[(index + k) % len(QA_PAIRS)] for k in range(questions_per_image)]
        else:
            pairs = [QA_PAIRS[index % len(QA_PAIRS)]]
        rows["images"].append([noise_image(index)])
        rows["messages"].append(chat_messages(pairs))
    text = datasets.Value("string")
    features = datasets.Features(
        {
            "images": datasets.Sequence(datasets.Image()),
            "messages": [{"role": text, "content": [{"type": text, "text": text}]}],
        }
    )
    (out / "data").mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(out / "data" / "train-00000-of-00001.parquet"))
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


def trainer_argv(args, config: dict, dataset: Path, output_dir: Path, cache: Path) -> list[str]:
    argv = [
        str(RECIPE),
        "--model_name_or_path", str(args.model),
        "--dataset_name", str(dataset),
        "--output_dir", str(output_dir),
        "--max_steps", str(args.warmup + args.steps),
        "--per_device_train_batch_size", str(config.get("batch_size", args.batch_size)),
        "--gradient_accumulation_steps", "1",
        "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none", "--loss_curve", "false",
        "--logging_steps", "1", "--disable_tqdm", "true", "--dataloader_num_workers", str(args.workers),
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
    from transformers import TrainerCallback

    from stk_vqa.scripts.sft import build_trainer
    from stk_vqa.training import vision_features
    from stk_vqa.training.configs import parse_recipe

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    config = CONFIGS[args.config]
    work = Path(args.workdir)
    dataset = work / ("grouped" if config.get("grouped") else "per_pair")
    cache = work / "features.safetensors"

    cache_seconds = {"s": 0.0}
    original_prepare = vision_features.prepare_feature_cache

    def timed_prepare(*a, **k):
        start = time.perf_counter()
        try:
            return original_prepare(*a, **k)
        finally:
            cache_seconds["s"] += time.perf_counter() - start

    vision_features.prepare_feature_cache = timed_prepare
    trainer = build_trainer(*parse_recipe(trainer_argv(args, config, dataset, work / f"out-{args.config}", cache)))
    if config.get("per_sample"):
        trainer.data_collator = PerSampleCollator(
            trainer.data_collator, trainer.processing_class.tokenizer.pad_token_id
        )
    encoded = vision_features.count_encoded_images(trainer.model)

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends, self.encoded = [], []

        def on_step_end(self, _args, state, control, **kwargs):
            if torch.cuda.is_available() and args.device == "cuda":
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())
            self.encoded.append(encoded())

    clock = StepClock()
    trainer.add_callback(clock)
    trainer.train()
    w = args.warmup
    seconds = clock.ends[-1] - clock.ends[w - 1]
    timed_steps = len(clock.ends) - w
    batch = config.get("batch_size", args.batch_size)
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
        "images_encoded_per_step": round((clock.encoded[-1] - clock.encoded[w - 1]) / timed_steps, 2),
        "cache_prepare_s": round(cache_seconds["s"], 2),
        "first_loss": round(losses[0], 4) if losses else None,
        **peak_memory_mb(args.device),
    }


def build_cache(args) -> dict:
    """Encode every distinct image of the benchmark datasets once into the feature cache (timed)."""
    import torch
    from datasets import load_dataset

    from stk_vqa.scripts.sft import build_trainer
    from stk_vqa.training.configs import parse_recipe
    from stk_vqa.training.vision_features import prepare_feature_cache

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
    parser.add_argument("--batch_size", type=int, default=2, help="rows per step (per-pair configurations)")
    parser.add_argument("--grouped_batch_size", type=int, default=1, help="rows per step, grouped rows")
    parser.add_argument("--questions_per_image", type=int, default=len(QA_PAIRS), help="QA turns per grouped row")
    parser.add_argument("--steps", type=int, default=2, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--cache_batch_size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (collation)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {list(CONFIGS)}")
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
        rows_needed = (args.warmup + args.steps) * args.batch_size
        write_dataset(work / "per_pair", n_images=rows_needed, grouped=False, questions_per_image=1)
        write_dataset(work / "grouped", n_images=(args.warmup + args.steps) * args.grouped_batch_size, grouped=True,
                      questions_per_image=args.questions_per_image)  # fmt: skip
        args.passthrough = [
            "--device", args.device, "--size", args.size, "--threads", str(args.threads),
            "--batch_size", str(args.batch_size), "--grouped_batch_size", str(args.grouped_batch_size),
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
