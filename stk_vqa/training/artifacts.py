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

from stk_vqa.fileio import atomic_write_bytes, atomic_write_text

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


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The highest-step ``checkpoint-N`` folder whose ``trainer_state.json`` exists (the Trainer writes it last).

    A run killed while saving leaves a partial ``checkpoint-N`` behind; ``get_last_checkpoint`` would pick it.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    steps = []
    for path in folder.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and path.is_dir():
            steps.append((int(match.group(1)), path))
    for _step, path in sorted(steps, reverse=True):
        if (path / "trainer_state.json").is_file():
            return os.fspath(path)
        logger.warning("skipping incomplete checkpoint %s (no trainer_state.json)", path)
    return None
