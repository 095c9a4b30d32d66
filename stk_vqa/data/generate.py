"""QA generation for a whole split folder (``stk-vqa generate``) and for one view (``stk-vqa check``).

A split folder holds ``<frame>_info.json`` and ``<frame>_<view:02d>_im.jpg`` files. The folder is listed
once, each info file is parsed once for all its views, and large splits are spread over processes.
Images are optional: without them the labels are made for the course's 150x100 images.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stk_vqa.fileio import atomic_write_bytes, guard_output_file, on_interrupt

from .configs import CheckConfig, GenerateConfig, parse_image_size
from .info_file import InfoFileError, load_frame
from .questions import QAPair, generate_scene_qa, resolve_families
from .scene import COURSE_IMAGE_SIZE, check_image_size, view_scene

logger = logging.getLogger(__name__)

FRAME_ID = r"[0-9a-f]{5,8}"
"""A frame id: 5 to 8 lowercase hex digits (the course's ``00000``..., render's ``{frame:05x}``)."""
INFO_RE = re.compile(rf"^(?P<frame>{FRAME_ID})_info\.json$")
IMAGE_RE = re.compile(rf"^(?P<frame>{FRAME_ID})_(?P<view>\d\d)_im\.jpg$")
INPUT_NAME_RE = re.compile(r"^.*(_info\.json|_im\.jpg)$")
"""Names that a split folder's reader takes as input; no command writes a file of such a name."""
OUTPUT_NAME = "generated_qa_pairs.json"
PARALLEL_MIN_FRAMES = 1000
"""Below this many frames a process pool costs more than it saves."""
PARALLEL_MIN_CPUS = 2
"""A pool needs at least 2 cores to pay: on 2 idle cores it took 5.9 s vs 6.8 s in one process for 5,250 frames,
but on 2 cores busy with other work it lost (15.7 s vs 10.5 s), as pickling results back costs more than the
parsing it shares (``benchmarks/bench_generate.py``); pass ``num_workers=1`` on a loaded machine."""


@dataclass(frozen=True)
class FrameFiles:
    """The files of one frame found in a split folder."""

    frame_id: str
    info_path: Path
    image_views: tuple[int, ...]
    """View indices that have an image file (empty when the split holds only info files)."""
    problem: str | None = None
    """Why the file cannot be a frame (a ``*_info.json`` whose name is not ``<frame id>_info.json``)."""

    def image_name(self, view_index: int) -> str:
        return f"{self.frame_id}_{view_index:02d}_im.jpg"


@dataclass(frozen=True)
class ViewQA:
    view_index: int
    image_file: str
    """Relative to the data folder, e.g. ``valid/00000_00_im.jpg``."""
    pairs: tuple[QAPair, ...]
    image_size: tuple[int, int] = COURSE_IMAGE_SIZE
    """The size the view's labels are made for: its own image's, or the one asked for."""


@dataclass(frozen=True)
class FrameQA:
    frame_id: str
    track: str
    image_size: tuple[int, int]
    """View 0's size (each view has its own: :attr:`ViewQA.image_size`)."""
    views: tuple[ViewQA, ...]
    box_method: str | None = None
    """How the frame's boxes were made, when its info file says (rendered frames do); ``None`` otherwise."""
    bad_images: tuple[tuple[str, str], ...] = ()
    """``(path, problem)`` of view images whose header cannot be read (those views get no QA pairs)."""


@dataclass
class GenerationSummary:
    frames: int = 0
    skipped: int = 0
    skipped_images: int = 0
    views_with_questions: int = 0
    pairs: int = 0
    per_family: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def add(self, frame_qa: FrameQA) -> None:
        self.frames += 1
        self.skipped_images += len(frame_qa.bad_images)
        self.errors.extend(f"{path}: {problem}" for path, problem in frame_qa.bad_images)
        for view in frame_qa.views:
            if view.pairs:
                self.views_with_questions += 1
            self.pairs += len(view.pairs)
            self.per_family.update(p.family for p in view.pairs)

    def skip(self, error: Exception) -> None:
        self.frames += 1
        self.skipped += 1
        self.errors.append(str(error))

    def line(self) -> str:
        families = ", ".join(f"{k}={v}" for k, v in self.per_family.items())
        return (
            f"frames: {self.frames} read, {self.skipped} skipped (bad input)"
            + (f", {self.skipped_images} unreadable image(s) skipped" if self.skipped_images else "")
            + "; "
            f"views with questions: {self.views_with_questions}; QA pairs: {self.pairs} ({families})"
        )


def scan_split(split_dir: str | os.PathLike) -> list[FrameFiles]:
    """List a split folder once and group its files by frame (sorted by frame id)."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"split folder not found: {split_dir}")
    infos: dict[str, Path] = {}
    views: dict[str, list[int]] = {}
    misnamed: list[FrameFiles] = []
    with os.scandir(split_dir) as entries:
        for entry in entries:
            if m := INFO_RE.match(entry.name):
                infos[m["frame"]] = Path(entry.path)
            elif m := IMAGE_RE.match(entry.name):
                views.setdefault(m["frame"], []).append(int(m["view"]))
            elif entry.name.endswith("_info.json") and not entry.name.startswith("."):
                problem = f"not a frame name: expected <frame id>_info.json, the id {FRAME_ID}"
                misnamed.append(FrameFiles(entry.name[: -len("_info.json")], Path(entry.path), (), problem))
    frames = [FrameFiles(fid, infos[fid], tuple(sorted(views.get(fid, ())))) for fid in sorted(infos)]
    return frames + sorted(misnamed, key=lambda f: f.info_path.name)


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """Width and height from the image header (the pixels are not decoded)."""
    import io

    from PIL import Image, UnidentifiedImageError

    from stk_vqa.fileio import read_regular_file

    try:
        header = read_regular_file(path, 2**20 - 1)  # a JPEG's size is in its first kilobytes
        if header:
            with Image.open(io.BytesIO(header)) as image:
                return image.size
    except UnidentifiedImageError:
        raise InfoFileError(path, "<image>", "cannot read image: not a recognised image file") from None
    except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for other non-image data
        raise InfoFileError(path, "<image>", f"cannot read image: {err}") from err
    raise InfoFileError(path, "<image>", "empty file (0 bytes)")


def frame_qa(
    files: FrameFiles,
    split_name: str,
    families: str | Sequence[str] | None = None,
    image_size: Sequence[int] | None = None,
) -> FrameQA:
    """Parse one frame's info file once and generate the QA pairs of all its views.

    Each view is labelled at its own image's size (read from its header) unless ``image_size`` is given; a view
    whose image header cannot be read gets no pairs and is listed in ``bad_images``."""
    if files.problem:
        raise InfoFileError(files.info_path, "<file name>", files.problem)
    frame = load_frame(files.info_path)
    if files.image_views and files.image_views != tuple(range(frame.num_views)):
        raise InfoFileError(
            files.info_path,
            "detections",
            f"has {frame.num_views} views but the images present are for views {list(files.image_views)}",
        )
    fixed = check_image_size(image_size) if image_size is not None else None
    views, bad = [], []
    for v in range(frame.num_views):
        size = fixed or COURSE_IMAGE_SIZE
        if fixed is None and files.image_views:
            try:
                size = check_image_size(read_image_size(files.info_path.parent / files.image_name(v)),
                                        files.info_path.parent / files.image_name(v))  # fmt: skip
            except InfoFileError as err:
                bad.append((err.source, err.problem))
                views.append(ViewQA(v, f"{split_name}/{files.image_name(v)}", (), size))
                continue
        pairs = generate_scene_qa(view_scene(frame, v, size), families)
        views.append(ViewQA(v, f"{split_name}/{files.image_name(v)}", tuple(pairs), size))
    first = views[0].image_size
    return FrameQA(frame.frame_id, frame.track, first, tuple(views), frame.extra.get("box_method"), tuple(bad))


def _frame_qa_or_error(args) -> FrameQA | InfoFileError:
    try:
        return frame_qa(*args)
    except InfoFileError as err:
        return err


def iter_split_qa(
    split_dir: str | os.PathLike,
    families: str | Sequence[str] | None = None,
    image_size: Sequence[int] | None = None,
    strict: bool = False,
    num_workers: int | None = None,
    summary: GenerationSummary | None = None,
    progress: bool = True,
) -> Iterator[FrameQA]:
    """Yield a :class:`FrameQA` per frame of ``split_dir`` in frame order.

    Bad frames (and unreadable view images) raise :class:`InfoFileError` with ``strict``; otherwise they are
    logged, skipped and counted in ``summary``.
    """
    from tqdm.auto import tqdm

    split_dir = Path(split_dir)
    resolve_families(families)  # fail fast on unknown names, before any work
    frames = scan_split(split_dir)
    if summary is None:
        summary = GenerationSummary()
    jobs = [(f, split_dir.name, families, image_size) for f in frames]
    if num_workers is None:
        cpus = os.cpu_count() or 1
        num_workers = min(cpus, 8) if len(jobs) >= PARALLEL_MIN_FRAMES and cpus >= PARALLEL_MIN_CPUS else 1
    bar = tqdm(total=len(jobs), desc=f"QA {split_dir.name}", unit="frame", disable=not progress or len(jobs) < 200)
    if num_workers > 1:
        import multiprocessing

        context = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
        pool = context.Pool(num_workers, initializer=ignore_sigint)
        results = pool.imap(_frame_qa_or_error, jobs, chunksize=64)
    else:
        pool = None
        results = map(_frame_qa_or_error, jobs)
    try:
        for result in results:
            bar.update()
            if isinstance(result, InfoFileError):
                if strict:
                    raise result
                logger.warning("skipping frame: %s", result)
                summary.skip(result)
                continue
            if result.bad_images:
                if strict:
                    raise InfoFileError(result.bad_images[0][0], "<image>", result.bad_images[0][1])
                for path, problem in result.bad_images:
                    logger.warning("skipping view image %s: %s", path, problem)
            summary.add(result)
            yield result
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()


def ignore_sigint() -> None:
    """Pool workers leave Ctrl-C to the parent, which prints one line (no traceback per worker)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def qa_records(frames: Iterator[FrameQA]) -> list[dict]:
    """Flatten to the course's JSON records (``image_file``, ``question``, ``answer``, ``family``)."""
    return [
        {"image_file": view.image_file, "question": p.question, "answer": p.answer, "family": p.family}
        for frame in frames
        for view in frame.views
        for p in view.pairs
    ]


def records_json(records: list[dict]) -> bytes:
    """The records as ``json.dumps(records, indent=2)`` writes them, plus a newline, made by orjson.

    The same bytes for ASCII text (every question and answer here; other text is written as UTF-8 rather than
    ``\\u`` escapes), about 40x faster: with the standard library's pure-Python indenting encoder, writing took
    more than half of ``stk-vqa generate``'s time on a train-sized split (``docs/training-speed.md``).
    """
    import orjson

    return orjson.dumps(records, option=orjson.OPT_INDENT_2) + b"\n"


def generate(config: GenerateConfig) -> None:
    """Generate the QA pairs of a split folder and write them as JSON (``stk-vqa generate``)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    split_dir = Path(config.data_dir) / config.data_split
    out = Path(config.output_file) if config.output_file else split_dir / OUTPUT_NAME
    if not split_dir.is_dir():
        raise FileNotFoundError(f"split folder not found: {split_dir}")
    guard_output_file(out, [split_dir], "output_file", reserved=INPUT_NAME_RE)
    check_previous_output(out)
    summary = GenerationSummary()
    frames = iter_split_qa(split_dir, config.families, parse_image_size(config.image_size), config.strict,
                           config.num_workers, summary, config.progress)  # fmt: skip
    with on_interrupt(f"{out} left as it was"):
        records = qa_records(frames)
    print(summary.line())
    if not records:
        kept = f"{out} left as it was" if out.exists() else f"{out} not written"
        raise InfoFileError(split_dir, "<split>", f"no QA pairs generated ({summary.frames} frame(s) found, "
                            f"{summary.skipped} skipped as bad input); {kept}")  # fmt: skip
    atomic_write_bytes(out, records_json(records))
    print(f"wrote {len(records)} QA pairs to {out}")


def check_previous_output(out: Path) -> None:
    """Refuse to replace an existing file that is not a QA list (``[{image_file, question, answer}, ...]``)."""
    if not out.exists():
        return
    import json

    try:
        if out.stat().st_size > 0:
            previous = json.loads(out.read_bytes())
            if not isinstance(previous, list) or not all(isinstance(r, dict) and "question" in r for r in previous):
                raise ValueError("not a list of QA records")
    except (OSError, ValueError, RecursionError) as err:
        raise InfoFileError(out, "<output_file>", f"exists and is not a QA pairs file ({err}); it is left alone: "
                            "remove it yourself or choose another --output_file") from None  # fmt: skip


def describe_scene(scene) -> str:
    """A human-readable account of one view's scene."""
    lines = [
        f"frame {scene.frame.frame_id} view {scene.view_index}: track {scene.frame.track}, "
        f"image {scene.image_size[0]}x{scene.image_size[1]}, {len(scene.karts)} visible kart(s)"
    ]
    for kart in scene.karts:
        b = kart.box
        role = "EGO" if kart is scene.ego else f"{scene.vertical(kart)} and {scene.horizontal(kart)}"
        lines.append(
            f"  kart {kart.instance_id:>2} {kart.name:<16} box ({b.x1},{b.y1},{b.x2},{b.y2}) "
            f"centre ({kart.center[0]:g},{kart.center[1]:g})  {role}"
        )
    if scene.objects:
        counts = Counter(o.class_name for o in scene.objects)
        lines.append("  objects: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return "\n".join(lines)


def check(config: CheckConfig) -> None:
    """Print one view's scene and QA pairs and save the view with its boxes drawn (``stk-vqa check``)."""
    from .draw import draw_scene

    view_index, families = config.view_index, config.families
    info_path = Path(config.info_file)
    frame = load_frame(info_path)
    image_path = info_path.parent / f"{frame.frame_id}_{view_index:02d}_im.jpg"
    out = Path(config.output_file or f"{frame.frame_id}_{view_index:02d}_check.png")
    guard_output_file(out, [info_path, image_path], "output_file", reserved=INPUT_NAME_RE)
    size = parse_image_size(config.image_size)
    image = None
    if image_path.is_file():
        from PIL import Image

        try:
            with Image.open(image_path) as opened:
                image = opened.convert("RGB")
        except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for truncated / non-image files
            raise InfoFileError(image_path, "<image>", f"cannot read image: {err}") from None
        size = size or image.size
    scene = view_scene(frame, view_index, size or COURSE_IMAGE_SIZE)
    print(describe_scene(scene))
    pairs = generate_scene_qa(scene, families)
    print(f"{len(pairs)} QA pair(s):")
    for p in pairs:
        print(f"  [{p.family}] {p.question} -> {p.answer}")
    if image is None:
        print(f"(no image at {image_path}; boxes drawn on a blank canvas)")
    import io

    buffer = io.BytesIO()
    draw_scene(scene, image).save(buffer, format="PNG")
    atomic_write_bytes(out, buffer.getvalue())
    print(f"saved {out}")
