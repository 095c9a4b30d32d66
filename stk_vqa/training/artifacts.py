"""Files a training run leaves in its output folder: loss curve PNG, recipe.yaml, the model card's stk-vqa section,
and the checkpoints it resumes from."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from stk_vqa.fileio import (
    MARKER,
    atomic_write_bytes,
    atomic_write_text,
    check_not_input,
    weights_file_problem,
    write_marker,
)

logger = logging.getLogger(__name__)

CARD_SECTION = "## stk-vqa training run"


def write_loss_curve(log_history: list[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """Plot training (and evaluation) loss against the step from a Trainer's ``log_history``; None if nothing logged."""
    train = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry and "step" in entry]
    evaluation = [(entry["step"], entry["eval_loss"]) for entry in log_history if "eval_loss" in entry]
    if not train and not evaluation:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.add_subplot()
    for points, label, style in ((train, "train", "-"), (evaluation, "validation", "o--")):
        if points:
            steps, losses = zip(*points)
            axes.plot(steps, losses, style, label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("loss (answer tokens)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return atomic_write_bytes(path, buffer.getvalue())


class LossCurveCallback(TrainerCallback):
    """Writes ``<output_dir>/loss_curve.png`` when training ends (main process only)."""

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            write_loss_curve(state.log_history, Path(args.output_dir) / "loss_curve.png")


def write_recipe(path: str | os.PathLike, recipe: dict[str, Any]) -> Path:
    """The run's effective recipe (fields that differ from their defaults) as YAML; rerun it with scripts/sft.py."""
    import yaml

    return atomic_write_text(path, yaml.safe_dump(recipe, sort_keys=True))


def extend_model_card(readme: str | os.PathLike, recipe: dict[str, Any]) -> Path:
    """Append base model, dataset, recipe, loss curve and evaluation results (``eval_results.json``) to a card."""
    import yaml

    readme = Path(readme)
    folder = readme.parent
    card = readme.read_text(encoding="utf-8") if readme.exists() else ""
    lines = [
        "",
        CARD_SECTION,
        "",
        f"- Base model: `{recipe.get('model_name_or_path', 'unknown')}`",
        f"- Dataset: `{recipe.get('dataset_name', 'unknown')}`",
        "- Trained with stk-vqa's `scripts/sft.py` (TRL `SFTTrainer`, LoRA, loss on the answer tokens only)",
        "",
        "### Recipe",
        "",
        "```yaml",
        yaml.safe_dump(recipe, sort_keys=True).rstrip(),
        "```",
    ]
    if (folder / "loss_curve.png").exists():
        lines += ["", "### Loss", "", "![loss curve](loss_curve.png)"]
    results = folder / "eval_results.json"
    if results.exists():
        metrics = json.loads(results.read_text(encoding="utf-8"))
        lines += ["", "### Evaluation", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |"
                  for key, value in sorted(metrics.items())]  # fmt: skip
    return atomic_write_text(readme, card.rstrip("\n") + "\n" + "\n".join(lines) + "\n")


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """``None`` if a ``checkpoint-N`` folder is complete and every file of it reads, else what is wrong.

    ``trainer_state.json`` (written last) must parse as a JSON object; every ``.safetensors``, ``.pt``,
    ``.pth``, ``.bin`` and ``.json`` file is checked from its header / zip directory (no tensor is loaded)."""
    path = Path(path)
    state = path / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (a run stopped while saving it)"
    try:
        if not isinstance(json.loads(state.read_text(encoding="utf-8")), dict):
            return "trainer_state.json is not a JSON object"
    except (OSError, ValueError, RecursionError) as err:
        return f"trainer_state.json cannot be read ({type(err).__name__}: {err})"
    try:
        files = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix in (".safetensors", ".pt", ".pth", ".bin", ".json")
        )
    except OSError as err:
        return f"cannot be listed ({err})"
    for file in files:
        problem = weights_file_problem(file)
        if problem:
            return problem
    return None


def checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The ``checkpoint-N`` folders of a run, newest (highest N) first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    steps = []
    for path in folder.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and path.is_dir():
            steps.append((int(match.group(1)), path))
    return [path for _step, path in sorted(steps, reverse=True)]


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The highest-step ``checkpoint-N`` folder whose files all read (:func:`checkpoint_problem`).

    A run killed while saving leaves a partial ``checkpoint-N`` behind, and a disk fault a truncated file;
    ``get_last_checkpoint`` would pick either. Skipped checkpoints are logged with their problem.
    """
    for path in checkpoints(output_dir):
        problem = checkpoint_problem(path)
        if problem is None:
            return os.fspath(path)
        logger.warning("skipping checkpoint %s: %s", path, problem)
    return None


RUN_FILES = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "trainer_state.json",
    "recipe.yaml",
    "model.safetensors",
)
"""Files whose presence in ``output_dir`` means an earlier training run is there."""


def earlier_run(output_dir: str | os.PathLike) -> list[str]:
    """What an earlier training run left in ``output_dir`` (checkpoint folders and run files), by name."""
    folder = Path(output_dir)
    found = [p.name for p in checkpoints(folder)]
    found += [name for name in RUN_FILES if (folder / name).exists()]
    return found


def check_output_dir(output_dir: str, inputs: list, resume: bool, overwrite: bool) -> None:
    """Refuse an ``output_dir`` that overlaps an input (dataset, model, recipe), is not a folder, was not made by
    training, or holds an earlier run when neither resuming nor ``overwrite_output_dir``. Raises ``ValueError``."""
    from stk_vqa.fileio import is_replaceable

    folder = Path(output_dir)
    check_not_input(folder, inputs, (), "output_dir")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ValueError(f"output_dir {folder} exists and is not a folder")
    found = earlier_run(folder)
    if not found and not is_replaceable(folder):
        raise ValueError(
            f"output_dir {folder} is a non-empty folder that no training run made (no {MARKER}, no checkpoints): "
            "choose another output_dir"
        )
    if found and not resume and not overwrite:
        raise ValueError(
            f"output_dir {folder} holds an earlier run ({', '.join(found[:4])}): pass --resume_from_checkpoint last "
            "to continue it, --overwrite_output_dir true to replace it, or choose another output_dir"
        )


def prepare_output_dir(output_dir: str, overwrite: bool, keep: list = ()) -> None:
    """With ``overwrite``, remove the earlier run in ``output_dir`` (checked by :func:`check_output_dir`), except
    the ``keep`` paths (e.g. a vision-feature cache stored there); mark the folder as a training run's."""
    import shutil

    folder = Path(output_dir)
    if overwrite and folder.is_dir() and earlier_run(folder):
        kept = [Path(k).resolve() for k in keep if k]
        for entry in folder.iterdir():
            resolved = entry.resolve()
            if entry.name == MARKER or any(resolved == k or resolved in k.parents for k in kept):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        logger.warning("overwrite_output_dir: removed the earlier run in %s", folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_marker(folder, "train")


def saved_note(output_dir: str) -> str:
    """What a training run has saved so far, for the line Ctrl-C prints."""
    last = last_complete_checkpoint(output_dir)
    if last is None:
        return f"no complete checkpoint saved yet in {output_dir}"
    return f"newest complete checkpoint: {last} (continue with --resume_from_checkpoint last)"
