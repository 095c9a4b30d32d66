"""GPU-only training paths: bf16, QLoRA (bitsandbytes 4-bit), DeepSpeed ZeRO-2/3, FSDP, the full-size shape.

Deselected by default; on a machine with a CUDA device run

    pytest -m gpu tests/test_training_gpu.py -v

Offline and self-contained: the tiny / full-shape stand-ins are built locally, nothing is downloaded. Needs
`pip install -e .[qlora,deepspeed]` for the QLoRA and DeepSpeed tests (skipped with the reason otherwise).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_training import BLIND_LOSS, REPO_ROOT, free_port, smoke_argv, subprocess_env

pytestmark = pytest.mark.gpu

GPU_FLAGS = ("--use_cpu", "false", "--bf16", "true", "--dtype", "bfloat16")


@pytest.fixture(autouse=True)
def _needs_cuda():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


def _losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_bf16_training_on_gpu_learns_and_saves(tiny_model_dir, color_chat_dataset_dir, tmp_path):
    import torch

    from stk_vqa.scripts.sft import train

    trainer = train(
        smoke_argv(tiny_model_dir, color_chat_dataset_dir, tmp_path / "bf16", *GPU_FLAGS, "--max_steps", "40")
    )
    base_weight = next(p for n, p in trainer.model.named_parameters() if "embed_tokens" in n)
    assert base_weight.dtype == torch.bfloat16 and base_weight.device.type == "cuda"
    losses = _losses(trainer)
    assert losses[0] > 5.0 and sum(losses[-5:]) / 5 < BLIND_LOSS
    assert (tmp_path / "bf16" / "adapter_model.safetensors").exists()


def test_qlora_4bit_trains_and_adapter_reloads(tiny_model_dir, color_chat_dataset_dir, tmp_path):
    pytest.importorskip("bitsandbytes", reason="pip install 'stk-vqa[qlora]'")
    import bitsandbytes as bnb
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from stk_vqa.scripts.sft import train

    out = tmp_path / "qlora"
    argv = smoke_argv(tiny_model_dir, color_chat_dataset_dir, out, *GPU_FLAGS, "--load_in_4bit", "true",
                      "--bnb_4bit_quant_type", "nf4", "--max_steps", "40")  # fmt: skip
    trainer = train(argv)
    text_linears = [
        m for n, m in trainer.model.named_modules() if n.endswith("text_model.layers.0.self_attn.q_proj.base_layer")
    ]
    assert text_linears and isinstance(text_linears[0], bnb.nn.Linear4bit)
    losses = _losses(trainer)
    assert sum(losses[-5:]) / 5 < losses[0] / 2
    reloaded = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_model_dir), out)
    assert any("lora_A" in name for name, _ in reloaded.named_parameters())


@pytest.mark.parametrize("config", ["deepspeed_zero2.yaml", "deepspeed_zero3.yaml", "fsdp.yaml"])
def test_sharded_launch_configs_train_one_gpu(config, tiny_model_dir, color_chat_dataset_dir, tmp_path):
    if config.startswith("deepspeed"):
        pytest.importorskip("deepspeed", reason="pip install 'stk-vqa[deepspeed]'")
    out = tmp_path / config.removesuffix(".yaml")
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO_ROOT / "accelerate_configs" / config), "--num_processes", "1",
        "--main_process_port", str(free_port()),
        str(REPO_ROOT / "scripts" / "sft.py"),
        *smoke_argv(tiny_model_dir, color_chat_dataset_dir, out, *GPU_FLAGS, "--max_steps", "6", "--save_steps", "3"),
    ]  # fmt: skip
    result = subprocess.run(command, env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6


def test_ddp_on_two_gpus(tiny_model_dir, color_chat_dataset_dir, tmp_path):
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO_ROOT / "accelerate_configs" / "multi_gpu.yaml"), "--num_processes", "2",
        "--main_process_port", str(free_port()),
        str(REPO_ROOT / "scripts" / "sft.py"),
        *smoke_argv(tiny_model_dir, color_chat_dataset_dir, out, *GPU_FLAGS, "--max_steps", "4"),
    ]  # fmt: skip
    result = subprocess.run(command, env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (out / "adapter_model.safetensors").exists()


def test_lora_recipe_on_the_full_size_shape(color_chat_dataset_dir, tmp_path):
    """The real recipe (512px -> 64 image tokens, batch 8) on SmolVLM-256M's exact shape, a few steps."""
    import torch

    from stk_vqa.scripts.sft import train
    from stk_vqa.tiny_model import make_tiny_model

    model_dir = make_tiny_model(tmp_path / "full", size="full")
    torch.cuda.reset_peak_memory_stats()
    argv = [str(REPO_ROOT / "recipes" / "smolvlm_lora.yaml"), "--model_name_or_path", model_dir,
            "--dataset_name", str(color_chat_dataset_dir), "--output_dir", str(tmp_path / "out"), "--max_steps", "3",
            "--gradient_accumulation_steps", "1", "--eval_strategy", "no", "--save_strategy", "no",
            "--dataloader_num_workers", "0", "--disable_tqdm", "true"]  # fmt: skip
    trainer = train(argv)
    assert trainer.processing_class.image_seq_len == 64
    assert trainer.state.global_step == 3 and all(loss == loss for loss in _losses(trainer))  # no NaN
    assert torch.cuda.max_memory_allocated() < 20 * 2**30
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()
