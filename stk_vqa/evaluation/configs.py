"""Options of ``stk-vqa evaluate`` / ``test`` / ``ask`` (and ``scripts/evaluate.py``), one dataclass per command.

Parsed by ``transformers.HfArgumentParser`` from flags or a YAML file, like every stk-vqa command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from stk_vqa.data.configs import check_range

DEFAULT_BASE_MODEL = "HuggingFaceTB/SmolVLM-256M-Instruct"
DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_device_dtype(device: str, dtype: str) -> None:
    """``--device`` auto, cpu, cuda, cuda:N or mps; ``--dtype`` one of :data:`DTYPES`."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d{1,2})?", str(device)):
        raise ValueError(f"--device {device!r}: expected auto, cpu, cuda, cuda:N or mps")
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")


def split_list(values) -> list[str]:
    """``["a,b", "c"]`` or ``"a,b"`` -> ``["a", "b", "c"]``: list flags take several values or comma-separated ones."""
    values = [values] if isinstance(values, str) else list(values or [])
    return [part.strip() for value in values for part in str(value).split(",") if part.strip()]


@dataclass
class EvalConfig:
    """Benchmark a base model and adapters on a QA split; write results.json, report.md, a chart, predictions.jsonl."""

    data: str = field(
        default="",
        metadata={
            "help": "A DatasetDict folder (`stk-vqa build` output), a Hub dataset id, "
            "or a legacy QA json ([{image_file, question, answer}])."
        },
    )
    model: str | None = field(
        default=None,
        metadata={
            "help": "Base model folder or Hub id (default: the first "
            f"adapter's recorded base, else {DEFAULT_BASE_MODEL})."
        },
    )
    adapters: list[str] = field(
        default_factory=list,
        metadata={
            "help": "LoRA adapter folders or Hub ids (`name=path` sets a display name), compared side by side; several "
            "values or comma-separated.",
            "nargs": "*",
        },
    )
    split: str = field(default="validation", metadata={"help": "Split of a DatasetDict to evaluate."})
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder the legacy json's image_file paths are relative to (default: the json's grandparent, the "
            "course layout, or its folder)."
        },
    )
    max_samples: int | None = field(default=None, metadata={"help": "Evaluate a random sample of this many questions."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    out_dir: str = field(default="eval_report", metadata={"help": "Report folder (must not exist unless --overwrite)."})
    with_base: bool = field(default=False, metadata={"help": "Also evaluate the base model without adapter."})
    prior: bool = field(
        default=True,
        metadata={"help": "Include the blind prior (most frequent training answer per question template)."},
    )
    prior_data: str | None = field(default=None, metadata={"help": "Training data of the blind prior (default: data)."})
    prior_split: str = field(default="train", metadata={"help": "Split of prior_data with the training answers."})
    batch_size: int = field(default=16, metadata={"help": "Questions per generation batch."})
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "Generation limit (default: the longest gold answer + 5 tokens)."}
    )
    reuse_vision: bool = field(default=True, metadata={"help": "Encode each image once for all its questions."})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu, cuda, cuda:1..."})
    dtype: str = field(
        default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16."}
    )
    allow_base_mismatch: bool = field(
        default=False, metadata={"help": "Use an adapter on a base model other than the one it records."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace out_dir."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar during inference."})
    title: str | None = field(default=None, metadata={"help": "Report title."})

    def __post_init__(self):
        self.adapters = split_list(self.adapters)  # `--adapters a,b` and `--adapters a b` both work
        check_range("max_samples", self.max_samples, 1, optional=True)
        check_range("batch_size", self.batch_size, 1, 4096)
        check_range("max_new_tokens", self.max_new_tokens, 1, 4096, optional=True)
        check_device_dtype(self.device, self.dtype)
        if self.out_dir is not None and not str(self.out_dir).strip():
            raise ValueError("--out_dir: empty")
        if not str(self.split).strip():
            raise ValueError("--split: empty")


@dataclass
class TestConfig(EvalConfig):
    """Evaluate one checkpoint (an adapter folder or Hub id, or a full model folder): the original project's alias."""

    checkpoint: str = field(
        default="",
        metadata={"help": "Adapter folder / Hub id (its recorded base model is used), or a full model folder."},
    )
    out_dir: str | None = field(
        default=None,
        metadata={"help": "Report folder (default: <checkpoint>/eval for a local checkpoint, else eval_report)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.checkpoint:
            raise ValueError("a checkpoint is required: stk-vqa test CHECKPOINT --data DATA")


@dataclass
class AskConfig:
    """Answer one question about one image (for poking at a model)."""

    image: str = field(default="", metadata={"help": "Image file."})
    question: str = field(default="", metadata={"help": 'The question, e.g. "What kart is the ego car?".'})
    model: str | None = field(
        default=None,
        metadata={
            "help": f"Base model folder or Hub id (default: the adapter's recorded base, else {DEFAULT_BASE_MODEL})."
        },
    )
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter folder or Hub id."})
    max_new_tokens: int = field(default=32, metadata={"help": "Generation limit."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda..."})
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16, float16."})
    allow_base_mismatch: bool = field(default=False, metadata={"help": "Use the adapter on another base model."})

    def __post_init__(self):
        if not self.image or not self.question.strip():
            raise ValueError('an image and a question are required: stk-vqa ask IMAGE "QUESTION"')
        check_range("max_new_tokens", self.max_new_tokens, 1, 4096)
        check_device_dtype(self.device, self.dtype)
