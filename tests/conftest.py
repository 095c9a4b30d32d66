"""Shared test fixtures. Tests run offline and on CPU."""

from __future__ import annotations

import os

# Before anything imports torch / huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real validation-split info files of the public course dataset (tests/data/reference/README.md).
REFERENCE_INFO_DIR = REPO_ROOT / "tests" / "data" / "reference"


@pytest.fixture(scope="session")
def reference_info_dir() -> Path:
    return REFERENCE_INFO_DIR


COLOR_NAMES = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}


def make_color_chat_dataset(out_dir: Path, n_train: int = 8, n_valid: int = 4, size: int = 64) -> Path:
    """A tiny DatasetDict in stk-vqa's row format (``images`` + chat ``messages`` + metadata).

    Each image is one flat colour; the question asks for it. Saved with ``save_to_disk``-free parquet
    layout (``<split>-*.parquet`` under ``data/``) so ``load_dataset(out_dir)`` reads it.
    """
    import datasets
    from PIL import Image

    from stk_vqa.data.rows import chat_messages, dataset_features

    names = list(COLOR_NAMES)

    def rows(n: int, offset: int):
        out = {k: [] for k in dataset_features(group_by_image=False)}
        for i in range(n):
            name = names[(i + offset) % len(names)]
            question = "What color is the image?"
            out["images"].append([Image.new("RGB", (size, size), COLOR_NAMES[name])])
            out["messages"].append(chat_messages([(question, name)]))
            out["question"].append(question)
            out["answer"].append(name)
            out["family"].append("color")
            out["frame_id"].append(f"{i + offset:05x}")
            out["view_index"].append(0)
            out["track"].append("synthetic")
            out["image_file"].append(f"synthetic/{i + offset:05x}_00_im.jpg")
        return datasets.Dataset.from_dict(out, features=dataset_features(group_by_image=False))

    out_dir = Path(out_dir)
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    rows(n_train, 0).to_parquet(str(out_dir / "data" / "train-00000-of-00001.parquet"))
    rows(n_valid, n_train).to_parquet(str(out_dir / "data" / "validation-00000-of-00001.parquet"))
    return out_dir


@pytest.fixture(scope="session")
def color_chat_dataset_dir(tmp_path_factory) -> Path:
    """Path of a tiny saved chat dataset (see :func:`make_color_chat_dataset`)."""
    return make_color_chat_dataset(tmp_path_factory.mktemp("color_chat"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Folder of a tiny offline SmolVLM-architecture model + processor (``stk-vqa make-tiny-model``).

    Load it with ``AutoModelForImageTextToText.from_pretrained`` / ``AutoProcessor.from_pretrained``. 128x128 images
    -> 4 ``<image>`` tokens, fp32, random weights from seed 0. Built once per session (~1 s after imports).
    """
    from stk_vqa.tiny_model import make_tiny_model

    return Path(make_tiny_model(tmp_path_factory.mktemp("tiny_model") / "tiny-smolvlm", size="tiny", seed=0))


@pytest.fixture(scope="session")
def trained_color_adapter_dir(tmp_path_factory, tiny_model_dir, color_chat_dataset_dir) -> Path:
    """A LoRA adapter trained by ``stk_vqa.training`` (smoke recipe, 30 steps, CPU) on the 8 training rows of
    ``color_chat_dataset_dir`` on top of ``tiny_model_dir``; it answers their colours right (a few seconds)."""
    from stk_vqa.scripts.sft import train

    out = tmp_path_factory.mktemp("trained") / "color-lora"
    argv = ["recipes/smoke_cpu.yaml", "--model_name_or_path", str(tiny_model_dir),
            "--dataset_name", str(color_chat_dataset_dir), "--output_dir", str(out), "--max_steps", "30",
            "--save_strategy", "no", "--report_to", "none", "--loss_curve", "false", "--logging_steps", "30"]  # fmt: skip
    train([str(REPO_ROOT / a) if a.startswith("recipes/") else a for a in argv])
    return out
