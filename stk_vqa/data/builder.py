"""Frames + QA pairs -> a Hub-ready ``datasets.DatasetDict`` (``stk-vqa build``, ``scripts/build_dataset.py``).

Rows are what TRL's vision-language SFT expects: ``images`` (a list with one image) and chat ``messages``,
plus plain metadata columns. The output folder is the Hub's parquet layout
(``data/<split>-XXXXX-of-XXXXX.parquet`` + a ``README.md`` dataset card), so ``load_dataset(out_dir)``
reads it offline and ``push_to_hub`` uploads exactly the same files.

Flow: split folders (or a legacy ``*_qa_pairs.json``) -> metadata rows (no pixels) -> image check ->
re-split (by folder, frame or track) -> balancing -> optional grouping by image -> parquet written by
``datasets`` from a generator (images streamed from disk, ``num_proc`` workers) -> card, all inside an
atomically renamed folder.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from stk_vqa.fileio import atomic_directory, guard_output_dir

from .balancing import answer_distribution, format_distribution
from .card import write_dataset_card
from .configs import BuildConfig
from .hub import push_dataset_folder
from .rows import (
    BuildReport,
    drop_bad_images,
    group_rows_by_image,
    hub_split_name,
    resplit,
    rows_from_legacy_qa_file,
    rows_from_split_folder,
    select_rows,
    shuffle_images,
)
from .writer import write_split

logger = logging.getLogger(__name__)


def build(config: BuildConfig) -> tuple[Path, BuildReport]:
    """Build the dataset described by ``config``; returns the output folder and a report."""
    import datasets

    data_dir = Path(config.data_dir)
    out_dir = Path(config.out_dir)
    folders = [s.strip() for s in config.splits.split(",") if s.strip()]
    inputs = [config.legacy_qa_file] if config.legacy_qa_file else [data_dir / folder for folder in folders]
    guard_output_dir(out_dir, inputs, overwrite=config.overwrite, what="out_dir")  # fail before any work
    report = BuildReport()
    rows_by_split: dict[str, list[dict]] = {}
    if config.legacy_qa_file:
        rows_by_split[config.legacy_split] = rows_from_legacy_qa_file(Path(config.legacy_qa_file), data_dir)
        inputs += sorted({str(data_dir / Path(row["image_file"]).parent) for row in rows_by_split[config.legacy_split]})
    else:
        for folder in folders:
            name = hub_split_name(folder)
            rows = rows_from_split_folder(data_dir, folder, config.families, config.strict, config.num_proc, report)
            rows_by_split.setdefault(name, []).extend(rows)
    for name, rows in rows_by_split.items():
        rows_by_split[name] = drop_bad_images(rows, data_dir, config.strict, config.num_proc, report)
    rows_by_split = resplit(rows_by_split, config)

    targets = {s.strip() for s in config.balance_splits.split(",") if s.strip()} or set(rows_by_split)
    if targets - set(rows_by_split):
        raise ValueError(f"--balance_splits {sorted(targets - set(rows_by_split))}: no such split; "
                         f"the splits are {sorted(rows_by_split)}")  # fmt: skip
    final: dict[str, list[dict]] = {}
    for name, rows in rows_by_split.items():
        report.rows_before[name] = len(rows)
        report.distribution_before[name] = answer_distribution(rows)
        selected = select_rows(rows, config) if name in targets else rows
        if config.shuffle_images and name == "train":
            selected = shuffle_images(selected, config.seed)
        report.distribution_after[name] = answer_distribution(selected)
        final[name] = group_rows_by_image(selected) if config.group_by_image else selected
        report.rows_after[name] = len(final[name])
        if not final[name]:
            raise ValueError(f"split {name!r} has no rows left (data_dir={data_dir})")

    with atomic_directory(out_dir, overwrite=config.overwrite, inputs=inputs, command="build") as tmp:
        cache_dir = Path(tmp) / ".cache"
        splits = {}
        for name, rows in final.items():
            splits[name] = write_split(rows, name, Path(tmp), config, cache_dir)
        shutil.rmtree(cache_dir, ignore_errors=True)
        write_dataset_card(Path(tmp), datasets.DatasetDict(splits), config, report)
    print_report(report, out_dir)
    if config.push_to_hub:
        push_dataset_folder(out_dir, config.hub_dataset_id, private=config.hub_private)
    return out_dir, report


def print_report(report: BuildReport, out_dir: Path) -> None:
    for split in report.rows_before:
        print(f"\n== {split}: {report.rows_before[split]} QA rows -> {report.rows_after[split]} rows written")
        print(format_distribution(report.distribution_before[split], report.distribution_after[split]))
    print(
        f"\nskipped: {report.skipped_frames} bad frame(s), {report.skipped_images} bad image(s)"
        f"\nwrote {out_dir} (load with datasets.load_dataset({str(out_dir)!r}))"
    )
