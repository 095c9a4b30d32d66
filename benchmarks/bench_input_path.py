"""Input-path cost per row for one DataLoader worker: TRL's stock collator vs the pre-processed path.

SmolVLM-256M's processor configuration (Idefics3, one 512x512 image per row, 64 image tokens, SmolVLM's chat
template in TRL's assistant-mask variant; the tokenizer is the offline stand-in's, ``stk_vqa/tiny_model.py``), the
bundled sample (``stk_vqa/data/sample``: real 150x100 renders, 1,149 train rows) built by the builder.

* ``baseline``: TRL's ``DataCollatorForVisionLanguageModeling`` as ``SFTTrainer`` makes it (chat rendering,
  tokenising, assistant mask, PIL image processing to fp32 pixels), on rows read from the dataset;
* ``ours_no_cache``: rows tokenised once (:func:`~stk_vqa.training.preprocess.tokenize_rows`), collated by
  :class:`~stk_vqa.training.preprocess.PreprocessedCollator` (padding + each distinct image decoded to uint8 at its
  stored size; the resize + normalise then runs on the training device, timed apart as ``device_transform``);
* ``ours_cache``: the same with a feature cache (connector features gathered from the safetensors file; the file here
  holds random features of the real shape, 64 x 576 bf16 per image: the lookup cost does not depend on the values).

Each is timed in this one process, one torch thread (what one worker does): rows read from the dataset + collation,
random batches of ``--batch_size`` rows, in the same run; ``--passes`` alternating rounds, the best round kept (the
machine may be shared). Also: bytes per row a worker sends to the main process, and the one-off tokenising pass.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_input_path.py [--out benchmarks/results/input_path.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "stk_vqa" / "data" / "sample"


def make_processor(image_size: int):
    from stk_vqa.tiny_model import SHAPES, build_processor, build_tokenizer

    _, vision, scale_factor = SHAPES["full"]
    return build_processor(build_tokenizer(), image_size, vision["patch_size"], scale_factor)


def trl_collator(processor):
    """TRL's vision-language collator with the settings ``SFTTrainer`` gives it for our recipes."""
    from trl import SFTConfig
    from trl.chat_template_utils import get_training_chat_template
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    args = SFTConfig(output_dir=tempfile.gettempdir(), assistant_only_loss=True, report_to=[], use_cpu=True, bf16=False)
    return DataCollatorForVisionLanguageModeling(
        processor=processor,
        max_length=args.max_length,
        pad_to_multiple_of=args.pad_to_multiple_of,
        assistant_only_loss=True,
        chat_template=get_training_chat_template(processor),
    )


def random_feature_cache(path: Path, dataset, seq_len: int, hidden: int):
    import torch

    from stk_vqa.training.feature_cache import CACHE_FORMAT, FeatureCache, _save_cache

    keys = sorted({key for row in dataset["image_keys"] for key in row})
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(len(keys), seq_len, hidden, generator=generator).to(torch.bfloat16)
    probe = torch.zeros(1, seq_len, hidden, dtype=torch.bfloat16)
    metadata = {"format": CACHE_FORMAT, "model": "random", "processing": "{}", "dtype": "bfloat16"}
    _save_cache(path, keys, features, probe, metadata)
    return FeatureCache(path)


def batch_bytes(batch) -> int:
    import torch

    total = 0
    for value in batch.values():
        for tensor in value if isinstance(value, list) else [value]:
            if torch.is_tensor(tensor):
                total += tensor.numel() * tensor.element_size()
    return total


def time_path(dataset, collate, batches) -> tuple[float, int]:
    """Seconds for reading + collating ``batches`` (lists of row indices), and the bytes produced."""
    start = time.perf_counter()
    sent = 0
    for indices in batches:
        sent += batch_bytes(collate(dataset.__getitems__(indices)))
    return time.perf_counter() - start, sent


def main(argv=None):
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--rows", type=int, default=256, help="rows timed per path per pass")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--image_size", type=int, default=512)
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "input_path.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    import datasets
    import transformers
    import trl

    from stk_vqa.data.builder import build
    from stk_vqa.data.configs import BuildConfig
    from stk_vqa.fileio import atomic_write_json
    from stk_vqa.tiny_model import SHAPES
    from stk_vqa.training.image_transforms import DeviceImageProcessor
    from stk_vqa.training.preprocess import PreprocessedCollator, tokenize_rows

    datasets.disable_progress_bars()
    processor = make_processor(args.image_size)
    collator = trl_collator(processor)
    text, _, _ = SHAPES["full"]
    with tempfile.TemporaryDirectory(prefix="bench_input_path.") as tmp:
        work = Path(tmp)
        build(BuildConfig(data_dir=str(SAMPLE), out_dir=str(work / "dataset"), num_proc=1))
        train = datasets.load_dataset(str(work / "dataset"), split="train", cache_dir=str(work / "hf-cache"))
        start = time.perf_counter()
        tokenized = tokenize_rows(train, collator)
        tokenize_s = time.perf_counter() - start
        cache = random_feature_cache(
            work / "features.safetensors", tokenized, processor.image_seq_len, text["hidden_size"]
        )
        pad = processor.tokenizer.pad_token_id
        paths = {
            "baseline": (train, collator),
            "ours_no_cache": (tokenized, PreprocessedCollator(pad_token_id=pad)),
            "ours_cache": (tokenized, PreprocessedCollator(pad_token_id=pad, cache=cache)),
        }
        rng = random.Random(0)
        best = {name: float("inf") for name in paths}
        sent = {}
        for _ in range(args.passes):
            batches = [rng.sample(range(len(train)), args.batch_size) for _ in range(args.rows // args.batch_size)]
            for name, (dataset, collate) in paths.items():
                seconds, sent[name] = time_path(dataset, collate, batches)
                best[name] = min(best[name], seconds)
        rows = len(batches) * args.batch_size

        # the on-device part of ours_no_cache, here on the CPU (one thread): Pillow-exact resize + normalise
        device = DeviceImageProcessor(processor.image_processor)
        images = paths["ours_no_cache"][1](tokenized.__getitems__(list(range(0, 8 * 9, 9))))["images_uint8"]
        device(images[:1])
        start = time.perf_counter()
        device(images)
        device_ms = (time.perf_counter() - start) * 1000 / images.shape[0]

    ms = {name: best[name] * 1000 / rows for name in paths}
    result = {
        "benchmark": "input_path",
        "what": "one worker (1 torch thread): dataset rows read + collated, ms per row",
        "processor": f"Idefics3 {args.image_size}px, no splitting, {processor.image_seq_len} image tokens (SmolVLM-256M's)",
        "dataset": f"bundled sample, {len(train)} train rows",
        "batch_size": args.batch_size,
        "rows_timed": rows,
        "passes": args.passes,
        "baseline_ms_per_row": round(ms["baseline"], 3),
        "ours_no_cache_ms_per_row": round(ms["ours_no_cache"], 3),
        "ours_cache_ms_per_row": round(ms["ours_cache"], 3),
        "rows_per_s": {name: round(1000 / value, 1) for name, value in ms.items()},
        "speedup_vs_baseline": {name: round(ms["baseline"] / ms[name], 1) for name in paths if name != "baseline"},
        "kb_per_row_to_main_process": {name: round(sent[name] / rows / 1024, 1) for name in paths},
        "tokenize_once_ms_per_row": round(tokenize_s * 1000 / len(train), 3),
        "device_transform_cpu_ms_per_image": round(device_ms, 1),
        "load_average": os.getloadavg(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
    }
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
