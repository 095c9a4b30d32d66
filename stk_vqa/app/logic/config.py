"""What the app opens: its command-line options, the resolved data / models / report, and the error the page shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stk_vqa.evaluation.configs import split_list

PACKAGE_DIR = Path(__file__).resolve().parents[2]
BUNDLED_SAMPLE = PACKAGE_DIR / "data" / "sample"
QUICKSTART_DIR = Path("outputs/quickstart")
QUICKSTART_MODEL = "tiny-smolvlm"
QUICKSTART_ADAPTER = ("smoke_adapter", "adapter")
QUICKSTART_REPORT = "report"


class AppError(ValueError):
    """Something the page shows as a message (bad upload, unreadable data, a model that cannot load)."""


@dataclass
class AppOptions:
    """Browse frames with their boxes and questions, ask the base model and adapters side by side, read reports."""

    data: str | None = field(
        default=None,
        metadata={
            "help": "Frames in the course layout (a folder of split folders, or one split folder) or a DatasetDict "
            "(a `stk-vqa build` folder or a Hub dataset id). Default: the bundled sample."
        },
    )
    model: str | None = field(default=None, metadata={"help": "Base model folder or Hub id."})
    adapters: list[str] = field(
        default_factory=list,
        metadata={
            "help": "LoRA adapters, each name=path or a path / Hub id (several values or comma-separated).",
            "nargs": "*",
        },
    )
    report: str | None = field(default=None, metadata={"help": "An evaluation folder to open in the Report tab."})
    server_name: str = field(
        default="127.0.0.1",
        metadata={"help": "Address to listen on (Gradio's flag; 0.0.0.0 for every interface). Never shared publicly."},
    )
    server_port: int = field(default=7860, metadata={"help": "Port (Gradio's flag)."})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu, cuda..."})


@dataclass
class AppConfig:
    data: str
    model: str | None
    """``None``: the first adapter's recorded base model."""
    adapters: list[str]
    """``name=path`` or paths / Hub ids."""
    report: str | None
    notes: list[str] = field(default_factory=list)


def resolve_config(
    data: str | None = None,
    model: str | None = None,
    adapters: Any = None,
    report: str | None = None,
    quickstart_dir: str | Path = QUICKSTART_DIR,
) -> AppConfig:
    """What the app opens: the given flags, else the bundled sample and, when ``quickstart_dir`` holds a
    ``make quickstart`` run (and neither ``--model`` nor ``--adapters`` is given), its tiny model, adapter and
    report; else SmolVLM-256M-Instruct, loaded only when a question is asked."""
    from stk_vqa.evaluation.models import DEFAULT_BASE_MODEL

    adapters = split_list(adapters)
    notes = []
    qs = Path(quickstart_dir)
    if data is None:
        data = str(BUNDLED_SAMPLE)
        notes.append("data: the bundled sample (pass --data DIR_OR_HUB_ID for other frames or a DatasetDict)")
    if model is None and not adapters:
        qs_model, qs_adapter = qs / QUICKSTART_MODEL, qs / QUICKSTART_ADAPTER[1]
        if (qs_model / "config.json").is_file():
            model = str(qs_model)
            if (qs_adapter / "adapter_config.json").is_file():
                adapters = [f"{QUICKSTART_ADAPTER[0]}={qs_adapter}"]
            notes.append(
                f"models: the quickstart's offline stand-in and its adapter ({qs}): random weights trained a "
                "few steps, so their answers show that the plumbing works, not what SmolVLM can do"
            )
        else:
            model = DEFAULT_BASE_MODEL
            notes.append(f"model: {DEFAULT_BASE_MODEL} (no {qs}; loaded when you ask the first question)")
    if report is None and (qs / QUICKSTART_REPORT / "results.json").is_file():
        report = str(qs / QUICKSTART_REPORT)
    return AppConfig(str(data), model, adapters, report, notes)
