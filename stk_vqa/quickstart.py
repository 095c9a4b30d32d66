"""``stk-vqa quickstart``: the whole pipeline on the bundled rendered sample, end to end.

bundled frames -> DatasetDict (``stk_vqa.data.builder``) -> LoRA SFT with a recipe (``stk_vqa.training``)
-> evaluation report with per-family accuracy (``stk_vqa.evaluation``).

With the default smoke recipe everything is offline and CPU-only: the model is the tiny random-init
SmolVLM-architecture stand-in (``stk-vqa make-tiny-model``), so the report's numbers say that the pipeline works,
not what SmolVLM can learn. With ``recipes/smolvlm_lora.yaml`` (GPU + Hub access) the same command fine-tunes
the real SmolVLM-256M-Instruct.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_SAMPLE = PACKAGE_DIR / "data" / "sample"
REPO_RECIPES = PACKAGE_DIR.parent / "recipes"
QUICKSTART_RECIPE = "recipes/quickstart_cpu.yaml"
SMOKE_TITLE = (
    "SMOKE RUN: a tiny random-init SmolVLM-architecture stand-in trained for a few steps on the bundled sample. "
    "These numbers show that the pipeline works; they are not SmolVLM's accuracy."
)


@dataclass
class QuickstartConfig:
    """Build the bundled sample's dataset, train RECIPE on it, evaluate, and print the per-family table."""

    recipe: str = field(
        default=QUICKSTART_RECIPE,
        metadata={
            "help": "Training recipe; its values are used as written, except the locations (model, dataset, output) "
            "that the quickstart makes under work_dir. E.g. recipes/smolvlm_lora.yaml --tiny_model false on a "
            "GPU machine with Hub access."
        },
    )
    tiny_model: bool = field(
        default=True,
        metadata={
            "help": "Make the offline tiny stand-in under work_dir and train it (false: the recipe's model_name_or_path)."
        },
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Frames in the course layout with train and valid splits (default: the bundled sample)."},
    )
    work_dir: str = field(
        default="outputs/quickstart",
        metadata={"help": "Where the dataset, model, adapter and report go (re-made on each run)."},
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate a random sample of this many questions (default: all)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the dataset build and the evaluation sample."})

    def __post_init__(self):
        from stk_vqa.data.configs import check_range

        check_range("max_eval_samples", self.max_eval_samples, 1, optional=True)
        if not str(self.work_dir).strip():
            raise ValueError("--work_dir: empty")


def resolve_recipe(recipe: str) -> Path:
    """A recipe path as given, or under the repository's ``recipes/`` folder."""
    path = Path(recipe)
    if path.exists():
        return path
    for candidate in (REPO_RECIPES / path.name, REPO_RECIPES / f"{path.name}.yaml"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"recipe {recipe!r} not found (looked in . and {REPO_RECIPES})")


def _step(title: str) -> float:
    print(f"\n=== {title}", flush=True)
    return time.perf_counter()


def quickstart(config: QuickstartConfig | None = None) -> str:
    """Bundled frames -> DatasetDict -> LoRA training with the recipe -> evaluation report; returns the report folder."""
    from stk_vqa.data.builder import build
    from stk_vqa.data.configs import BuildConfig
    from stk_vqa.evaluation.cli import run_evaluation
    from stk_vqa.evaluation.configs import EvalConfig
    from stk_vqa.fileio import check_not_input
    from stk_vqa.scripts.sft import main as train
    from stk_vqa.training.configs import parse_recipe

    config = config or QuickstartConfig()
    started = time.perf_counter()
    work = Path(config.work_dir)
    recipe_path = resolve_recipe(config.recipe)
    data_dir = Path(config.data_dir or BUNDLED_SAMPLE)
    check_not_input(work, [data_dir, recipe_path], (), "work_dir")  # its outputs are replaced on every run

    t = _step(f"1/4 dataset from {config.data_dir or 'the bundled rendered sample'}")
    dataset_dir, _ = build(
        BuildConfig(data_dir=str(data_dir), out_dir=str(work / "dataset"),
                    splits="train,valid", seed=config.seed, overwrite=True)
    )  # fmt: skip
    print(f"({time.perf_counter() - t:.1f} s)")

    t = _step("2/4 model")
    # a previous quickstart's adapter is replaced (only a folder a training run made; anything else is refused)
    locations = [
        "--dataset_name",
        str(dataset_dir),
        "--output_dir",
        str(work / "adapter"),
        "--overwrite_output_dir",
        "true",
    ]
    if config.tiny_model:
        from .tiny_model import make_tiny_model

        model = make_tiny_model(str(work / "tiny-smolvlm"), size="tiny", seed=config.seed, overwrite=True)
        locations += ["--model_name_or_path", model]
        print(f"offline stand-in written to {model} ({time.perf_counter() - t:.1f} s)")
    script_args, training_args, model_args = parse_recipe([str(recipe_path), *locations])
    model = model_args.model_name_or_path
    if not config.tiny_model:
        print(f"{model} (from the recipe)")

    t = _step(f"3/4 training with {recipe_path}")
    adapter_dir = Path(training_args.output_dir)
    train(script_args, training_args, model_args)
    print(f"adapter saved to {adapter_dir} ({time.perf_counter() - t:.1f} s)")

    t = _step("4/4 evaluation on the validation split")
    report_dir = work / "report"
    smoke = config.tiny_model
    run_evaluation(EvalConfig(
        data=str(dataset_dir), model=model, adapters=[f"smoke_adapter={adapter_dir}" if smoke else str(adapter_dir)],
        split="validation", max_samples=config.max_eval_samples, seed=config.seed, out_dir=str(report_dir),
        with_base=True, overwrite=True, progress=False,
        title=SMOKE_TITLE if smoke else f"stk-vqa quickstart with {recipe_path.name}",
    ))  # fmt: skip
    print(f"({time.perf_counter() - t:.1f} s)")
    if smoke:
        print(f"\n{SMOKE_TITLE}")
    print(f"\nquickstart done in {time.perf_counter() - started:.0f} s; report: {report_dir / 'report.md'}")
    return str(report_dir)
