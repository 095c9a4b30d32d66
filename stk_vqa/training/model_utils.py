"""Model utilities: SmolVLM (or any Idefics3-architecture model) + processor as a recipe asks, and its LoRA config."""

from __future__ import annotations

import os

from trl import ModelConfig, SFTConfig

from stk_vqa.training.configs import RecipeError, StkScriptArguments

# Linear layers of SmolVLM's text model (a Llama decoder). With lora_scope="text" LoRA wraps only these, inside
# `text_model`: PEFT's plain name list would also match the SigLIP vision tower's q/k/v/out projections.
TEXT_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def image_seq_len(image_size: int, patch_size: int, scale_factor: int) -> int:
    """Number of ``<image>`` tokens one ``image_size`` x ``image_size`` image becomes (no splitting)."""
    side = image_size // patch_size
    if image_size % patch_size or side % scale_factor:
        raise ValueError(
            f"image_size={image_size} must be a multiple of patch_size*scale_factor={patch_size * scale_factor}"
        )
    return (side // scale_factor) ** 2


def check_quantization_supported(model_args: ModelConfig) -> None:
    """QLoRA (``load_in_4bit`` / ``load_in_8bit``) needs CUDA and bitsandbytes; say so plainly if either is missing."""
    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        return
    import importlib.util

    import torch

    mode = "load_in_4bit" if model_args.load_in_4bit else "load_in_8bit"
    if not torch.cuda.is_available():
        raise RecipeError(
            f"{mode} (QLoRA) needs a CUDA GPU and none is available; use recipes/smolvlm_lora.yaml (plain LoRA) "
            "on this machine"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RecipeError(f"{mode} (QLoRA) needs bitsandbytes: pip install 'stk-vqa[qlora]'")


def configure_processor(processor, model_config, image_size: int | None) -> int:
    """One square image per row, no splitting, ``image_seq_len`` matching the vision tower; returns the image size."""
    vision = model_config.vision_config
    size = int(image_size or vision.image_size)
    try:
        seq_len = image_seq_len(size, vision.patch_size, model_config.scale_factor)
    except ValueError as error:
        raise RecipeError(f"field 'image_size': {error}") from None
    image_processor = processor.image_processor
    image_processor.do_image_splitting = False
    image_processor.size = {"longest_edge": size}  # no detour through a 4x larger resize
    image_processor.max_image_size = {"longest_edge": size}
    processor.image_seq_len = seq_len
    return size


def load_model_and_processor(model_args: ModelConfig, script_args: StkScriptArguments, training_args: SFTConfig):
    """``AutoModelForImageTextToText`` + ``AutoProcessor`` as the recipe asks (dtype, attention, 4-bit)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
    from trl import get_quantization_config

    check_quantization_supported(model_args)
    name = model_args.model_name_or_path
    common = dict(revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(name, **common)
    except (OSError, ValueError) as error:
        hint = ""
        if not os.path.isdir(name):
            hint = f" (for an offline stand-in of SmolVLM run: stk-vqa make-tiny-model {name})"
        raise RecipeError(f"model {name!r} could not be loaded{hint}: {error}") from None
    processor = AutoProcessor.from_pretrained(name, **common)
    configure_processor(processor, config, script_args.image_size)

    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    kwargs = dict(common, dtype=dtype, attn_implementation=model_args.attn_implementation)
    if training_args.model_init_kwargs:
        kwargs.update(training_args.model_init_kwargs)
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        from accelerate import PartialState

        kwargs.update(quantization_config=quantization_config, device_map={"": PartialState().local_process_index})
    model = AutoModelForImageTextToText.from_pretrained(name, **kwargs)
    return model, processor


def lora_config(model_args: ModelConfig, scope: str = "text"):
    """TRL's LoRA config from ``model_args``, restricted to the text model when ``scope == "text"``."""
    import re

    from trl import get_peft_config

    peft_config = get_peft_config(model_args)
    if peft_config is None:
        return None
    names = model_args.lora_target_modules or TEXT_LINEAR_MODULES
    names = [names] if isinstance(names, str) else list(names)  # `--lora_target_modules all-linear` gives a str
    if names == ["all-linear"]:
        names = list(TEXT_LINEAR_MODULES) if scope == "text" else names
    if scope == "text":
        alternatives = "|".join(re.escape(name) for name in names)
        peft_config.target_modules = rf".*\.text_model\..*\.({alternatives})"  # PEFT: a str is a full-match regex
    else:
        peft_config.target_modules = "all-linear" if names == ["all-linear"] else names
    return peft_config
