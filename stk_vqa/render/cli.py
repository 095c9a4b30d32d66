"""``stk-vqa render``: races with AI karts -> frames with engine-exact boxes in the course layout.

One race per watched worker process (a race that stops reporting frames for ``stall_timeout`` seconds is killed;
a re-run resumes it: complete frames are kept, their info.json being written last).
"""

from __future__ import annotations

import os
import queue as queue_module
import random
import time
from pathlib import Path

from stk_vqa.fileio import guard_output_dir, write_marker
from stk_vqa.render import frame_writer
from stk_vqa.render.config import RenderConfig
from stk_vqa.render.game_data import (
    DEBIAN_DATA_DIR,
    ENGINE_PACKAGE,
    available_karts,
    available_tracks,
    check_installed,
    engine_version,
    kart_display_names,
    prepare_datadir,
)
from stk_vqa.render.instance import LABEL_SIZE
from stk_vqa.render.race import RaceSpec


def renderer_info() -> dict:
    """Which engine and data made a frame (stored in each info.json)."""
    return {
        "package": ENGINE_PACKAGE,
        "package_version": engine_version(),
        "game_data": "Debian supertuxkart-data (STK 1.4 assets) + stk-vqa label shaders",
        "mesa_extension_override": os.environ.get("MESA_EXTENSION_OVERRIDE"),
    }


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.replace(",", " ").split() if v]
    return [str(v) for v in value]


def _check_names(kind: str, asked: list[str], valid: list[str]) -> None:
    unknown = [name for name in asked if name not in valid]
    if unknown:
        raise ValueError(f"unknown {kind} {', '.join(map(repr, unknown))}; valid {kind}s: {', '.join(valid)}")


def parse_shard(shard) -> tuple[int, int]:
    """``"K/N"`` (0 <= K < N) -> (K, N); ``None`` -> (0, 1)."""
    if shard is None or shard == "":
        return 0, 1
    if isinstance(shard, (tuple, list)) and len(shard) == 2:
        text = f"{shard[0]}/{shard[1]}"
    else:
        text = str(shard)
    parts = text.split("/")
    try:
        index, count = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"shard must be K/N with integers 0 <= K < N (e.g. 0/4), got {shard!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"shard must be K/N with 0 <= K < N, got {index}/{count}")
    return index, count


def plan_races(
    tracks,
    frames,
    views,
    karts,
    seed,
    kart_names=None,
    width=150,
    height=100,
    warmup_steps=150,
    step_interval=10,
    race_frames=100,
    shard=None,
    data_dir=DEBIAN_DATA_DIR,
) -> list[RaceSpec]:
    """The races of one render (or of shard ``K/N`` of it).

    Track ``t`` owns frame ids ``t * frames .. t * frames + frames - 1``; its frames are rendered by races of at most
    ``race_frames`` frames each, every race seeded from (seed, track index, track, race index), so ids and
    content do not depend on how the work is sharded. Shard ``K/N`` takes races ``K, K + N, K + 2N, ...`` of the
    whole plan: shards are disjoint and together render everything.
    """
    shard_index, shard_count = parse_shard(shard)
    valid_tracks, valid_karts = available_tracks(data_dir), available_karts(data_dir)
    tracks = _as_list(tracks) or valid_tracks
    _check_names("track", tracks, valid_tracks)
    chosen = _as_list(kart_names)
    _check_names("kart", chosen, valid_karts)
    if views < 1 or karts < 1 or views > karts:
        raise ValueError(f"need 1 <= views ({views}) <= karts ({karts})")
    if frames < 1 or len(tracks) * frames > 0x100000:
        raise ValueError(f"frames must be >= 1 and tracks*frames < 16**5 (got {len(tracks)}*{frames})")
    if race_frames < 1:
        raise ValueError(f"race_frames must be >= 1 (got {race_frames})")
    if (width, height) != LABEL_SIZE and width * LABEL_SIZE[1] != height * LABEL_SIZE[0]:
        raise ValueError(f"image size {width}x{height} must have the 3:2 shape of the 600x400 label space")
    specs = []
    for index, track in enumerate(tracks):
        for chunk, start in enumerate(range(0, frames, race_frames)):
            rng = random.Random(f"{seed}:{index}:{track}:{chunk}")
            if chosen:
                lineup = [chosen[i % len(chosen)] for i in range(views)]
            else:
                lineup = rng.sample(valid_karts * (views // len(valid_karts) + 1), views)
            specs.append(
                RaceSpec(
                    track=track,
                    karts=lineup,
                    views=views,
                    frames=min(race_frames, frames - start),
                    first_frame=index * frames + start,
                    seed=rng.randrange(1 << 16),
                    num_karts=karts,
                    width=width,
                    height=height,
                    warmup_steps=warmup_steps,
                    step_interval=step_interval,
                )
            )
    return specs[shard_index::shard_count]


def _race_worker(
    spec: RaceSpec, split_dir: str, data_root: str, skip: set[int], messages, save_instances: bool = False
) -> None:
    """Worker process body: render one race, write each frame, report each one; never returns normally."""
    code = 0
    try:
        from stk_vqa.render.race import run_race

        display_names = kart_display_names()
        for frame in run_race(spec, data_root, skip=skip):
            state = frame.state
            karts = [display_names.get(name, name.lower()) for name in state.pop("karts")]
            extra = {
                "frame_step": frame.step,
                "seed": spec.seed,
                "renderer": renderer_info(),
                "image_size": [spec.width, spec.height],
                "label_size": list(LABEL_SIZE),
            }
            info = frame_writer.build_info(spec.track, karts, spec.views, state, extra)
            frame_writer.write_frame(
                Path(split_dir),
                frame.frame_id,
                frame.images,
                info,
                instances=frame.instances if save_instances else None,
            )
            messages.put(("frame", spec.first_frame, frame.frame_id))
        messages.put(("done", spec.first_frame, None))
    except BaseException as error:  # report, then leave without running the engine's teardown
        messages.put(("error", spec.first_frame, f"{type(error).__name__}: {error}"))
        code = 1
    finally:
        messages.close()
        messages.join_thread()  # flush the reports before leaving
        os._exit(code)  # skip the engine's atexit teardown (slow, crash-prone); frames are already on disk


def render(config: RenderConfig) -> dict | None:
    """Render fresh frames from SuperTuxKart into ``<out>/<split>/`` in the course layout, boxes from the engine
    (``stk-vqa render``; the fields of :class:`~stk_vqa.render.config.RenderConfig`).

    Returns None when every frame is there; else a summary dict (frames written, already there, lost, errors).
    A split folder is only added to when it is empty or one that ``stk-vqa render`` made (it carries the marker
    file): frames of another dataset are never mixed with (or overwritten by) rendered ones.
    """
    c = config
    split_dir = guard_output_dir(Path(c.out) / c.split, what="render split folder")  # before the game starts
    check_installed()
    specs = plan_races(c.tracks, c.frames, c.views, c.karts, c.seed, c.kart_names, c.width, c.height, c.warmup_steps,
                       c.step_interval, c.race_frames, c.shard)  # fmt: skip
    for spec in specs:
        spec.anisotropic = bool(c.anisotropic)
        spec.render_every_step = bool(c.render_every_step)
    data_root = str(prepare_datadir())
    split_dir.mkdir(parents=True, exist_ok=True)
    write_marker(split_dir, "render")
    todo = []
    done_before = 0
    for spec in specs:
        ids = range(spec.first_frame, spec.first_frame + spec.frames)
        skip = {i for i in ids if frame_writer.is_complete(split_dir, i, spec.views)}
        done_before += len(skip)
        if len(skip) < spec.frames:
            todo.append((spec, skip))
    total = sum(spec.frames - len(skip) for spec, skip in todo)
    summary = {"out": str(split_dir), "written": 0, "already_there": done_before, "lost": 0, "errors": []}
    if total:
        _run_workers(todo, split_dir, data_root, c.workers, float(c.stall_timeout), total, summary, c.instances)
    print(
        f"render: {summary['written']} frames written, {summary['already_there']} already there, "
        f"{summary['lost']} lost -> {split_dir}" + ("" if not summary["lost"] else " (re-run to complete)")
    )
    for error in summary["errors"]:
        print(f"render: {error}")
    return None if summary["lost"] == 0 else summary


def render_command(config: RenderConfig) -> None:
    """``stk-vqa render``: :func:`render`, exiting non-zero (``error: ...``) when frames were lost, so a script or a
    job array sees it; the frames written are kept and a re-run renders only the missing ones."""
    summary = render(config)
    if summary is not None:
        raise OSError(f"{summary['lost']} frame(s) lost ({'; '.join(summary['errors']) or 'see above'}); the frames "
                      f"written are kept in {summary['out']}, a re-run of the same command renders only the missing "
                      "ones")  # fmt: skip


def _run_workers(
    todo,
    split_dir: Path,
    data_root: str,
    workers: int,
    stall_timeout: float,
    total: int,
    summary: dict,
    save_instances: bool = False,
) -> None:
    import multiprocessing

    from tqdm.auto import tqdm

    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    pending = list(todo)
    running: dict[int, tuple] = {}  # first_frame -> (process, spec, frames_left, last_progress_time)
    with tqdm(total=total, desc="render", unit="frame") as progress:
        while pending or running:
            while pending and len(running) < workers:
                spec, skip = pending.pop(0)
                process = context.Process(
                    target=_race_worker,
                    args=(spec, str(split_dir), data_root, skip, messages, save_instances),
                    daemon=True,
                )
                process.start()
                running[spec.first_frame] = (process, spec, spec.frames - len(skip), time.monotonic())
            try:
                kind, key, payload = messages.get(timeout=1.0)
            except queue_module.Empty:
                kind, key, payload = None, None, None
            now = time.monotonic()
            if kind == "frame" and key in running:
                process, spec, left, _ = running[key]
                running[key] = (process, spec, left - 1, now)
                summary["written"] += 1
                progress.update(1)
            elif kind in {"done", "error"} and key in running:
                process, spec, left, _ = running.pop(key)
                process.join(timeout=30)
                if kind == "error":
                    summary["errors"].append(f"{spec.track}: {payload}")
                summary["lost"] += left
                progress.update(left)
            for key, (process, spec, left, last) in list(running.items()):
                if now - last > stall_timeout or (not process.is_alive() and messages.empty()):
                    process.kill()
                    process.join(timeout=30)
                    running.pop(key)
                    reason = "stalled" if process.exitcode is None or now - last > stall_timeout else "crashed"
                    summary["errors"].append(f"{spec.track}: race {reason} (exit code {process.exitcode})")
                    summary["lost"] += left
                    progress.update(left)
