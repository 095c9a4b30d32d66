"""Options of the data commands (``stk-vqa generate``, ``check``, ``build``, ``preview``), one dataclass per command.

Every command is parsed by ``transformers.HfArgumentParser`` from flags or a YAML file (:mod:`stk_vqa.cli`); the
library functions take the same dataclasses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_IMAGE_SIDE = 16384


def parse_image_size(value: str | None) -> tuple[int, int] | None:
    """``"150x100"`` -> ``(150, 100)``; None stays None. Each side must be 1 to 16384 pixels."""
    if value is None or str(value).strip() == "":
        return None
    match = re.fullmatch(r"\s*(\d{1,6})\s*[x,]\s*(\d{1,6})\s*", str(value).lower())
    if not match:
        raise ValueError(f"image_size {value!r}: expected WIDTHxHEIGHT of positive integers, e.g. 150x100")
    width, height = int(match[1]), int(match[2])
    if not (1 <= width <= MAX_IMAGE_SIDE and 1 <= height <= MAX_IMAGE_SIDE):
        raise ValueError(f"image_size {value!r}: each side must be 1 to {MAX_IMAGE_SIDE} pixels")
    return width, height


def check_range(name: str, value, low=None, high=None, optional: bool = False) -> None:
    """Raise ``ValueError`` naming flag ``name`` unless ``low <= value <= high`` (None allowed when ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"--{name}: expected a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"{low} to {high}"
        raise ValueError(f"--{name}: must be {bounds}, got {value!r}")


def check_families(value: str) -> None:
    from .questions import resolve_families

    if not str(value).strip():
        raise ValueError("--families: empty; use default, all or question family names")
    resolve_families(value)


def check_name(name: str, value: str, what: str = "a folder name") -> str:
    """A plain file/folder/split name: not empty, no path separator, not ``.`` or ``..``."""
    value = str(value).strip()
    if not value or value in (".", "..") or "/" in value or "\\" in value or not value.isprintable():
        raise ValueError(f"--{name}: {value!r} is not {what} (no '/', '..' or empty names)")
    return value


@dataclass
class GenerateConfig:
    """Generate the QA pairs of a split folder and write them as JSON."""

    data_split: str = field(default="train", metadata={"help": "Split folder under data_dir (e.g. train, valid)."})
    data_dir: str = field(default="data", metadata={"help": "The data folder; image_file entries are relative to it."})
    output_file: str | None = field(
        default=None, metadata={"help": "Where to write; default <data_dir>/<data_split>/generated_qa_pairs.json."}
    )
    families: str = field(
        default="default",
        metadata={"help": "Question families: default (the course's), all, or comma-separated names."},
    )
    strict: bool = field(
        default=False,
        metadata={
            "help": "Stop at the first bad info file with an error naming the file and field (default: skip and count)."
        },
    )
    num_workers: int | None = field(
        default=None, metadata={"help": "Processes (default: up to 8 for >= 1000 frames on >= 2 cores, else 1)."}
    )
    image_size: str | None = field(
        default=None,
        metadata={
            "help": "WIDTHxHEIGHT the labels are made for; default: read from the images, or the course's 150x100."
        },
    )
    progress: bool = field(default=True, metadata={"help": "Show a progress bar on long runs."})

    def __post_init__(self):
        check_name("data_split", self.data_split, "a split folder name")
        if not str(self.data_dir).strip():
            raise ValueError("--data_dir: empty")
        check_families(self.families)
        check_range("num_workers", self.num_workers, 1, 256, optional=True)
        parse_image_size(self.image_size)


@dataclass
class CheckConfig:
    """Print one view's scene and QA pairs and save the view with its boxes drawn."""

    info_file: str = field(default="", metadata={"help": "Path of a <frame>_info.json."})
    view_index: int = field(default=0, metadata={"help": "Which view."})
    families: str = field(default="default", metadata={"help": "Question families (default, all or names)."})
    image_size: str | None = field(
        default=None, metadata={"help": "WIDTHxHEIGHT; default: the view's image size, or 150x100 without an image."}
    )
    output_file: str | None = field(
        default=None, metadata={"help": "PNG to write; default <frame>_<view>_check.png in the current folder."}
    )

    def __post_init__(self):
        if not self.info_file:
            raise ValueError("an info file is required: stk-vqa check FRAME_info.json")
        check_range("view_index", self.view_index, 0, 63)
        check_families(self.families)
        parse_image_size(self.image_size)


@dataclass
class BuildConfig:
    """Options of ``stk-vqa build`` / ``scripts/build_dataset.py``."""

    data_dir: str = field(default="data", metadata={"help": "Folder holding split folders in the course layout."})
    out_dir: str = field(default="outputs/stk_vqa_dataset", metadata={"help": "Output folder (Hub parquet layout)."})
    splits: str = field(
        default="train,valid",
        metadata={
            "help": "Comma-separated split folders under data_dir; folders with the same last part go to one split "
            "(e.g. shard-0/train,shard-1/train,shard-0/valid: renders of several machines)."
        },
    )
    families: str = field(default="default", metadata={"help": "Question families: default, all, or names."})
    group_by_image: bool = field(default=False, metadata={"help": "One row per image with all its QA turns."})
    shuffle_images: bool = field(
        default=False,
        metadata={
            "help": "A control dataset: the train split's images shuffled across its rows (seeded); questions, "
            "answers and the other splits unchanged. A model that reads pixels must beat one trained on it."
        },
    )
    balance: bool = field(default=False, metadata={"help": "CLEVR-style answer rejection sampling per family."})
    grader_style: int = field(
        default=0, metadata={"help": "Items per family, zero directional counts dropped (0: off)."}
    )
    balance_splits: str = field(
        default="", metadata={"help": "Hub splits that balance/grader_style apply to ('' = all)."}
    )
    split_by: str = field(default="folder", metadata={"help": "folder | frame | track: how train/validation are made."})
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Share of frames/tracks for split_by frame/track."}
    )
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
        from .writer import parse_size

        if self.split_by not in {"folder", "frame", "track"}:
            raise ValueError(f"split_by must be folder, frame or track, got {self.split_by!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if self.validation_tracks and self.split_by != "track":
            raise ValueError("--validation_tracks needs --split_by track (it would be ignored)")
        if self.push_to_hub and not self.hub_dataset_id:
            raise ValueError("push_to_hub needs hub_dataset_id (e.g. --hub_dataset_id you/stk-vqa)")
        if self.push_to_hub and not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", self.hub_dataset_id):
            raise ValueError(f"--hub_dataset_id {self.hub_dataset_id!r}: expected a Hub id like you/stk-vqa")
        for name in ("data_dir", "out_dir"):
            if not str(getattr(self, name)).strip():
                raise ValueError(f"--{name}: empty")
        folders = [part.strip() for part in self.splits.split(",") if part.strip()]
        if not folders and not self.legacy_qa_file:
            raise ValueError("--splits: no split folder given (e.g. --splits train,valid)")
        for folder in folders:  # a split folder, or a path of them under data_dir (e.g. shard-0/train)
            for part in folder.split("/"):
                check_name("splits", part, "a split folder path under data_dir")
        if len(set(folders)) != len(folders):
            raise ValueError(f"--splits {self.splits!r}: a folder is listed twice (its rows would be duplicated)")
        if not re.fullmatch(r"\w+", self.legacy_split):
            raise ValueError(f"--legacy_split {self.legacy_split!r}: a split name is letters, digits and _")
        check_families(self.families)
        check_range("grader_style", self.grader_style, 0, 10**6)
        check_range("num_proc", self.num_proc, 1, 256, optional=True)
        if parse_size(self.max_shard_size) < 10**5:
            raise ValueError(f"--max_shard_size {self.max_shard_size!r}: must be at least 100KB")


@dataclass
class PreviewConfig:
    """Write <out_dir>/preview.png (a grid) and <out_dir>/index.html (a gallery) of sample rows of a built dataset."""

    dataset: str = field(
        default="", metadata={"help": "A built dataset folder or Hub id (anything load_dataset takes)."}
    )
    split: str = field(default="validation", metadata={"help": "Which split to sample."})
    num_rows: int = field(default=12, metadata={"help": "How many rows."})
    columns: int = field(default=4, metadata={"help": "Grid columns."})
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "The frames' data folder; when given, kart boxes (ego in red) are drawn from the info files."
        },
    )
    out_dir: str = field(default="preview", metadata={"help": "Output folder."})
    seed: int = field(default=0, metadata={"help": "Which rows are drawn."})

    def __post_init__(self):
        if not self.dataset:
            raise ValueError("a dataset is required: stk-vqa preview DATASET")
        check_range("num_rows", self.num_rows, 1, 1000)
        check_range("columns", self.columns, 1, 100)
        if not str(self.out_dir).strip():
            raise ValueError("--out_dir: empty")
