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
import math
import os
import random
import re
import shutil
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .balancing import answer_distribution, clevr_balance, format_distribution, grader_style_sample
from .fileio import atomic_directory
from .generate import GenerationSummary, iter_split_qa
from .legacy_qa import read_legacy_qa
from .scene import InfoFileError, load_frame

logger = logging.getLogger(__name__)

HUB_SPLIT_NAMES = {"train": "train", "valid": "validation", "val": "validation", "validation": "validation", "test": "test"}
IMAGE_NAME_RE = re.compile(r"(?P<frame>[0-9a-fA-F]+)_(?P<view>\d+)_im\.jpg$")
SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


@dataclass
class BuildConfig:
    """Options of ``stk-vqa build`` / ``scripts/build_dataset.py``."""

    data_dir: str = field(default="data", metadata={"help": "Folder holding split folders in the course layout."})
    out_dir: str = field(default="outputs/stk_vqa_dataset", metadata={"help": "Output folder (Hub parquet layout)."})
    splits: str = field(default="train,valid", metadata={"help": "Comma-separated split folders to read."})
    families: str = field(default="default", metadata={"help": "Question families: default, all, or names."})
    group_by_image: bool = field(default=False, metadata={"help": "One row per image with all its QA turns."})
    balance: bool = field(default=False, metadata={"help": "CLEVR-style answer rejection sampling per family."})
    grader_style: int = field(default=0, metadata={"help": "Items per family, zero directional counts dropped (0: off)."})
    balance_splits: str = field(default="", metadata={"help": "Hub splits that balance/grader_style apply to ('' = all)."})
    split_by: str = field(default="folder", metadata={"help": "folder | frame | track: how train/validation are made."})
    validation_fraction: float = field(default=0.1, metadata={"help": "Share of frames/tracks for split_by frame/track."})
    validation_tracks: str = field(default="", metadata={"help": "Tracks held out for validation (split_by track)."})
    legacy_qa_file: str = field(default="", metadata={"help": "A *_qa_pairs.json ({image_file, question, answer})."})
    legacy_split: str = field(default="validation", metadata={"help": "Hub split name for the legacy QA file."})
    seed: int = field(default=0, metadata={"help": "Seed of re-splitting, balancing and sampling."})
    strict: bool = field(default=False, metadata={"help": "Stop at the first bad info or image file."})
    num_proc: int | None = field(default=None, metadata={"help": "Processes for image checks and parquet writing."})
    max_shard_size: str = field(default="500MB", metadata={"help": "Largest parquet shard."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing out_dir."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload out_dir to the Hub after building."})
    hub_dataset_id: str = field(default="", metadata={"help": "Hub dataset repo id for push_to_hub."})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repo private."})

    def __post_init__(self):
        if self.split_by not in {"folder", "frame", "track"}:
            raise ValueError(f"split_by must be folder, frame or track, got {self.split_by!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if self.push_to_hub and not self.hub_dataset_id:
            raise ValueError("push_to_hub needs hub_dataset_id (e.g. --hub_dataset_id you/stk-vqa)")
        for name in ("splits", "families", "validation_tracks", "balance_splits"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):  # Fire turns "a,b" into a tuple
                setattr(self, name, ",".join(map(str, value)))


@dataclass
class BuildReport:
    rows_before: dict[str, int] = field(default_factory=dict)
    rows_after: dict[str, int] = field(default_factory=dict)
    distribution_before: dict[str, dict[str, Counter]] = field(default_factory=dict)
    distribution_after: dict[str, dict[str, Counter]] = field(default_factory=dict)
    skipped_frames: int = 0
    skipped_images: int = 0
    errors: list[str] = field(default_factory=list)
    box_methods: Counter = field(default_factory=Counter)
    """Frames per ``box_method`` of their info files (``None``: not stated, e.g. the course's own files)."""


# ------------------------------------------------------------------------------------------- features


def dataset_features(group_by_image: bool):
    import datasets

    text = datasets.Value("string")
    qa = datasets.Sequence(text) if group_by_image else text
    return datasets.Features(
        {
            "images": datasets.Sequence(datasets.Image()),
            "messages": [{"role": text, "content": [{"type": text, "text": text}]}],
            "question": qa,
            "answer": qa,
            "family": qa,
            "frame_id": text,
            "view_index": datasets.Value("int32"),
            "track": text,
            "image_file": text,
        }
    )


def chat_messages(pairs: Sequence[tuple[str, str]]) -> list[dict]:
    """TRL's conversational VLM format; the image goes in the first user turn only."""
    messages = []
    for turn, (question, answer) in enumerate(pairs):
        content = ([{"type": "image", "text": None}] if turn == 0 else []) + [{"type": "text", "text": question}]
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


# ------------------------------------------------------------------------------------ collecting rows


def hub_split_name(folder: str) -> str:
    return HUB_SPLIT_NAMES.get(folder, re.sub(r"[^\w]", "_", folder))


def _meta_row(image_file, question, answer, family, frame_id, view_index, track, image_size) -> dict:
    return {
        "image_file": image_file,
        "question": question,
        "answer": answer,
        "family": family,
        "frame_id": frame_id,
        "view_index": view_index,
        "track": track,
        "image_size": image_size,
    }


def rows_from_split_folder(
    data_dir: Path, folder: str, families: str, strict: bool, num_proc: int | None, report: BuildReport
) -> list[dict]:
    summary = GenerationSummary()
    rows = []
    for frame in iter_split_qa(data_dir / folder, families, None, strict, num_proc, summary):
        report.box_methods[frame.box_method] += 1
        for view in frame.views:
            for p in view.pairs:
                rows.append(
                    _meta_row(view.image_file, p.question, p.answer, p.family, frame.frame_id, view.view_index,
                              frame.track, frame.image_size)
                )
    report.skipped_frames += summary.skipped
    report.errors.extend(summary.errors)
    logger.info("%s: %s", folder, summary.line())
    return rows


def rows_from_legacy_qa_file(path: Path, data_dir: Path) -> list[dict]:
    """Rows from the original project's ``[{image_file, question, answer}, ...]`` files (family from the template,
    track from the frame's info file when it is beside the image)."""
    tracks: dict[Path, str] = {}
    rows = []
    for rec in read_legacy_qa(path):
        match = IMAGE_NAME_RE.search(rec.image_file)
        frame_id, view = (match["frame"], int(match["view"])) if match else ("", -1)
        info = (data_dir / rec.image_file).with_name(f"{frame_id}_info.json")
        if info not in tracks:
            tracks[info] = load_frame(info).track if match and info.exists() else ""
        rows.append(_meta_row(rec.image_file, rec.question, rec.answer, rec.family or "unknown", frame_id, view,
                              tracks[info], None))
    return rows


# ------------------------------------------------------------------------------------- image checking


def check_image(args: tuple[str, tuple[int, int] | None]) -> str | None:
    """``None`` if the image decodes fully (and has the expected size), else the problem."""
    from PIL import Image

    path, expected = args
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as image:
            image.load()  # full decode: catches truncated JPEGs
            if expected is not None and tuple(image.size) != tuple(expected):
                return f"size {image.size[0]}x{image.size[1]}, expected {expected[0]}x{expected[1]}"
    except FileNotFoundError:
        return "missing file"
    except Exception as err:  # PIL raises many types for corrupt data
        return f"cannot decode image: {err}"
    return None


def drop_bad_images(rows: list[dict], data_dir: Path, strict: bool, num_proc: int | None, report: BuildReport) -> list[dict]:
    from PIL import ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    images = {}
    for row in rows:
        images.setdefault(row["image_file"], row["image_size"])
    jobs = [(str(data_dir / name), size) for name, size in images.items()]
    workers = num_proc or 1
    if workers > 1 and len(jobs) > 2000:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            problems = pool.map(check_image, jobs, chunksize=256)
    else:
        problems = [check_image(job) for job in jobs]
    bad = {}
    for (name, _), problem in zip(images.items(), problems):
        if problem is not None:
            if strict:
                raise InfoFileError(data_dir / name, "<image>", problem)
            logger.warning("skipping image %s: %s", data_dir / name, problem)
            bad[name] = problem
    report.skipped_images += len(bad)
    report.errors.extend(f"{data_dir / n}: {p}" for n, p in bad.items())
    return [row for row in rows if row["image_file"] not in bad]


# ------------------------------------------------------------------------------------------ splitting


def resplit(rows_by_split: dict[str, list[dict]], config: BuildConfig) -> dict[str, list[dict]]:
    """Re-split all rows into train/validation by frame or by track (never one frame on both sides)."""
    if config.split_by == "folder":
        return rows_by_split
    rows = [row for split_rows in rows_by_split.values() for row in split_rows]
    rng = random.Random(config.seed)
    if config.split_by == "frame":
        frames = sorted({(r["image_file"].rsplit("/", 1)[0], r["frame_id"]) for r in rows})
        rng.shuffle(frames)
        held = set(frames[: max(1, round(len(frames) * config.validation_fraction))])
        is_validation = lambda r: (r["image_file"].rsplit("/", 1)[0], r["frame_id"]) in held  # noqa: E731
    else:
        tracks = sorted({r["track"] for r in rows})
        if config.validation_tracks:
            held = {t.strip() for t in config.validation_tracks.split(",") if t.strip()}
            unknown = held - set(tracks)
            if unknown:
                raise ValueError(f"validation_tracks not in the data: {sorted(unknown)}; tracks: {tracks}")
        else:
            rng.shuffle(tracks)
            held = set(tracks[: max(1, round(len(tracks) * config.validation_fraction))])
        if held >= set(tracks):
            raise ValueError("split_by track needs at least one track left for train")
        is_validation = lambda r: r["track"] in held  # noqa: E731
    out = {"train": [r for r in rows if not is_validation(r)], "validation": [r for r in rows if is_validation(r)]}
    return out


def select_rows(rows: list[dict], config: BuildConfig) -> list[dict]:
    if config.balance:
        rows = clevr_balance(rows, config.seed)
    if config.grader_style:
        rows = grader_style_sample(rows, config.grader_style, config.seed)
    return rows


def group_rows_by_image(rows: list[dict]) -> list[dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["image_file"]].append(row)
    grouped = []
    for image_file, items in groups.items():
        first = items[0]
        grouped.append({**first, **{k: [r[k] for r in items] for k in ("question", "answer", "family")}})
    return grouped


# -------------------------------------------------------------------------------------------- writing


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
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMG]?I?B)\s*", size.upper())
    if not match:
        raise ValueError(f"cannot read size {size!r} (e.g. 500MB)")
    return int(float(match[1]) * SIZE_UNITS[match[2]])


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
    num_shards = max(1, math.ceil(image_bytes * 1.05 / parse_size(config.max_shard_size)))
    for index in range(num_shards):
        shard = dataset.shard(num_shards, index, contiguous=True)
        shard.to_parquet(str(out / "data" / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"))
    return dataset


def build(config: BuildConfig) -> tuple[Path, BuildReport]:
    """Build the dataset described by ``config``; returns the output folder and a report."""
    import datasets

    data_dir = Path(config.data_dir)
    report = BuildReport()
    rows_by_split: dict[str, list[dict]] = {}
    if config.legacy_qa_file:
        rows_by_split[config.legacy_split] = rows_from_legacy_qa_file(Path(config.legacy_qa_file), data_dir)
    else:
        for folder in [s.strip() for s in config.splits.split(",") if s.strip()]:
            name = hub_split_name(folder)
            rows = rows_from_split_folder(data_dir, folder, config.families, config.strict, config.num_proc, report)
            rows_by_split.setdefault(name, []).extend(rows)
    for name, rows in rows_by_split.items():
        rows_by_split[name] = drop_bad_images(rows, data_dir, config.strict, config.num_proc, report)
    rows_by_split = resplit(rows_by_split, config)

    targets = {s.strip() for s in config.balance_splits.split(",") if s.strip()} or set(rows_by_split)
    final: dict[str, list[dict]] = {}
    for name, rows in rows_by_split.items():
        report.rows_before[name] = len(rows)
        report.distribution_before[name] = answer_distribution(rows)
        selected = select_rows(rows, config) if name in targets else rows
        report.distribution_after[name] = answer_distribution(selected)
        final[name] = group_rows_by_image(selected) if config.group_by_image else selected
        report.rows_after[name] = len(final[name])
        if not final[name]:
            raise ValueError(f"split {name!r} has no rows left (data_dir={data_dir})")

    from .dataset_card import write_dataset_card

    out_dir = Path(config.out_dir)
    with atomic_directory(out_dir, overwrite=config.overwrite) as tmp:
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


# ---------------------------------------------------------------------------------------------- Hub


def hub_upload_files(folder: str | os.PathLike) -> list[str]:
    """The files ``push_dataset_folder`` uploads: the card and the parquet shards, relative paths."""
    folder = Path(folder)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [f for f in files if f == "README.md" or (f.startswith("data/") and f.endswith(".parquet"))]


class HubPushError(OSError):
    pass


def push_dataset_folder(folder: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a built folder to the Hub as-is (same bytes that ``load_dataset(folder)`` reads)."""
    import huggingface_hub
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError

    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise HubPushError(
            f"cannot push {folder} to {repo_id}: HF_HUB_OFFLINE is set. The local dataset is intact; "
            f"push later with: stk-vqa build ... --push_to_hub or huggingface-cli upload {repo_id} {folder} --repo-type dataset"
        )
    token = token or huggingface_hub.get_token()
    if not token:
        raise HubPushError(
            f"cannot push {folder} to {repo_id}: no Hugging Face token (run `hf auth login` or set HF_TOKEN). "
            "The local dataset is intact."
        )
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="dataset",
            allow_patterns=hub_upload_files(folder),
            commit_message="Upload stk-vqa dataset",
        )
    except (HfHubHTTPError, OSError) as err:
        raise HubPushError(f"pushing {folder} to {repo_id} failed: {err}. The local dataset is intact.") from err
    url = f"https://huggingface.co/datasets/{repo_id}"
    print(f"pushed {folder} to {url}")
    return url


# ------------------------------------------------------------------------------------------------ CLI


def build_cli(**kwargs: Any) -> None:
    """Build a Hub-ready DatasetDict from frames in the course layout."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    unknown = set(kwargs) - set(BuildConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; known: {sorted(BuildConfig.__dataclass_fields__)}")
    build(BuildConfig(**kwargs))


def _describe_build_cli() -> None:
    """List BuildConfig's fields in ``build_cli``'s docstring, which ``stk-vqa build --help`` shows.

    The function keeps ``**kwargs`` (not a generated signature) so that an unknown flag is refused before any work,
    rather than left over by Fire after the build ran."""
    import dataclasses

    lines = [build_cli.__doc__.strip(), "", "Flags (the fields of BuildConfig):"]
    for f in dataclasses.fields(BuildConfig):
        lines.append(f"    --{f.name} (default {f.default!r}): {f.metadata.get('help', '')}")
    build_cli.__doc__ = "\n".join(lines)


_describe_build_cli()


def config_dict(config: BuildConfig) -> dict:
    return asdict(config)
