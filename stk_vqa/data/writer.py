"""Writing a split as parquet shards in the Hub's layout (``data/<split>-XXXXX-of-XXXXX.parquet``), images embedded,
from a generator (``datasets.Dataset.from_generator``, ``num_proc`` workers)."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from .configs import BuildConfig
from .rows import chat_messages, dataset_features

SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def _example(row: dict, data_dir: str) -> dict:
    with open(os.path.join(data_dir, row["image_file"]), "rb") as handle:
        image_bytes = handle.read()
    questions = row["question"] if isinstance(row["question"], list) else [row["question"]]
    answers = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
    return {
        "images": [{"bytes": image_bytes, "path": row["image_file"]}],
        "messages": chat_messages(list(zip(questions, answers))),
        "question": row["question"],
        "answer": row["answer"],
        "family": row["family"],
        "frame_id": row["frame_id"],
        "view_index": row["view_index"],
        "track": row["track"],
        "image_file": row["image_file"],
    }


def _generate_examples(chunks: list[list[dict]], data_dir: str):
    for chunk in chunks:
        for row in chunk:
            yield _example(row, data_dir)


def parse_size(size: str | int) -> int:
    """``"500MB"`` -> bytes (B, KB, MB, GB, KiB, MiB, GiB); a positive size of at most 1 TB."""
    if isinstance(size, int) and not isinstance(size, bool):
        number = size
    else:
        match = re.fullmatch(r"\s*(\d{1,15}(?:\.\d{1,6})?)\s*([KMG]?I?B)\s*", str(size).upper())
        if not match:
            raise ValueError(f"max_shard_size {size!r}: cannot read it (e.g. 500MB)")
        number = int(float(match[1]) * SIZE_UNITS[match[2]])
    if not 0 < number <= 10**12:
        raise ValueError(f"max_shard_size {size!r}: must be more than 0 and at most 1TB")
    return number


def write_split(rows: list[dict], split: str, out: Path, config: BuildConfig, cache_dir: Path):
    """Write one split as parquet shards under ``out/data``; returns the ``datasets.Dataset``."""
    import datasets

    features = dataset_features(config.group_by_image)
    chunk = 512
    chunks = [rows[i : i + chunk] for i in range(0, len(rows), chunk)]
    num_proc = config.num_proc if config.num_proc and config.num_proc > 1 and len(chunks) > 1 else None
    dataset = datasets.Dataset.from_generator(
        _generate_examples,
        features=features,
        gen_kwargs={"chunks": chunks, "data_dir": config.data_dir},
        num_proc=num_proc,
        cache_dir=str(cache_dir),
        split=datasets.NamedSplit(split),
    )
    file_sizes = {f: os.path.getsize(os.path.join(config.data_dir, f)) for f in {r["image_file"] for r in rows}}
    image_bytes = sum(file_sizes[r["image_file"]] for r in rows)  # every row embeds its own copy of its image
    num_shards = min(len(rows), max(1, math.ceil(image_bytes * 1.05 / parse_size(config.max_shard_size))))
    for index in range(num_shards):
        shard = dataset.shard(num_shards, index, contiguous=True)
        shard.to_parquet(str(out / "data" / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"))
    return dataset
