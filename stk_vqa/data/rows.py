"""Rows of an stk-vqa dataset: their schema (TRL's ``images`` + chat ``messages`` plus metadata columns) and how
they are collected (split folders or a legacy QA file), checked (images), re-split and selected (balancing)."""

from __future__ import annotations

import logging
import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .balancing import clevr_balance, grader_style_sample
from .configs import BuildConfig
from .generate import GenerationSummary, iter_split_qa
from .info_file import InfoFileError, load_frame
from .legacy_qa import read_legacy_qa

logger = logging.getLogger(__name__)

HUB_SPLIT_NAMES = {
    "train": "train",
    "valid": "validation",
    "val": "validation",
    "validation": "validation",
    "test": "test",
}
IMAGE_NAME_RE = re.compile(r"(?P<frame>[0-9a-fA-F]+)_(?P<view>\d+)_im\.jpg$")


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


# ------------------------------------------------------------------------------------------- schema


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
    """The Hub split a split folder goes to: its last path part, ``valid`` -> ``validation`` (``shard-0/train`` and
    ``shard-1/train`` both go to ``train``)."""
    name = Path(folder).name
    return HUB_SPLIT_NAMES.get(name, re.sub(r"[^\w]", "_", name))


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
            image_file = f"{Path(folder).as_posix()}/{Path(view.image_file).name}"  # relative to data_dir
            for p in view.pairs:
                rows.append(
                    _meta_row(
                        image_file,
                        p.question,
                        p.answer,
                        p.family,
                        frame.frame_id,
                        view.view_index,
                        frame.track,
                        view.image_size,
                    )
                )
    report.skipped_frames += summary.skipped
    report.skipped_images += summary.skipped_images
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
        rows.append(
            _meta_row(
                rec.image_file, rec.question, rec.answer, rec.family or "unknown", frame_id, view, tracks[info], None
            )
        )
    return rows


# ------------------------------------------------------------------------------------- image checking


def check_image(args: tuple[str, tuple[int, int] | None]) -> str | None:
    """``None`` if the image decodes fully (and has the expected size), else the problem."""
    from PIL import Image

    path, expected = args
    try:
        if os.path.exists(path) and not os.path.isfile(path):
            return "not a regular file"
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


def drop_bad_images(
    rows: list[dict], data_dir: Path, strict: bool, num_proc: int | None, report: BuildReport
) -> list[dict]:
    from PIL import ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    images = {}
    for row in rows:
        images.setdefault(row["image_file"], row["image_size"])
    jobs = [(str(data_dir / name), size) for name, size in images.items()]
    workers = num_proc or 1
    if workers > 1 and len(jobs) > 2000:
        import multiprocessing

        from .generate import ignore_sigint

        with multiprocessing.get_context("fork").Pool(workers, initializer=ignore_sigint) as pool:
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


def shuffle_images(rows: list[dict], seed: int) -> list[dict]:
    """The rows with their images permuted across rows (seeded): the same questions and answers about other images.
    ``image_file`` names the image a row now embeds; ``frame_id`` / ``view_index`` / ``track`` stay those of the
    question."""
    images = [(row["image_file"], row["image_size"]) for row in rows]
    random.Random(f"shuffle-images:{seed}").shuffle(images)
    return [{**row, "image_file": image, "image_size": size} for row, (image, size) in zip(rows, images)]


def group_rows_by_image(rows: list[dict]) -> list[dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["image_file"]].append(row)
    grouped = []
    for _image_file, items in groups.items():
        first = items[0]
        grouped.append({**first, **{k: [r[k] for r in items] for k in ("question", "answer", "family")}})
    return grouped
