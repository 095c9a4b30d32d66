"""Supervised fine-tuning of SmolVLM (LoRA / QLoRA) on an stk-vqa DatasetDict with TRL's ``SFTTrainer``.

A run is described by a YAML recipe (``recipes/*.yaml``) whose keys are the fields of three dataclasses, exactly as
in TRL's own ``trl/scripts/sft.py``: :class:`StkScriptArguments` (dataset, image size, LoRA scope), TRL's
``SFTConfig`` (everything ``transformers.TrainingArguments`` has, plus SFT options) and TRL's ``ModelConfig`` (model,
dtype, attention, LoRA, 4-bit). Any field can be overridden on the command line::

    accelerate launch scripts/sft.py recipes/smolvlm_lora.yaml --learning_rate 1e-4
    stk-vqa train recipes/smoke_cpu.yaml --dataset_name data/my-set

Loss is on the assistant's answer tokens and its ``<end_of_utterance>`` only: ``assistant_only_loss`` makes TRL
render the conversation with its training variant of SmolVLM's chat template (with ``{% generation %}`` markers)
inside TRL's own ``DataCollatorForVisionLanguageModeling``.

With the vision tower frozen, ``vision_feature_reuse`` / ``vision_feature_cache`` make the vision encoder run once
per distinct image of a batch, or once per image of the dataset (:mod:`stk_vqa.vision_features`).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trl import ModelConfig, ScriptArguments, SFTConfig, SFTTrainer, TrlParser

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("images", "messages")
# Linear layers of SmolVLM's text model (a Llama decoder). With lora_scope="text" LoRA wraps only these, inside
# `text_model`: PEFT's plain name list would also match the SigLIP vision tower's q/k/v/out projections.
TEXT_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class RecipeError(ValueError):
    """A recipe, its dataset or its model cannot be used; the message says which file / field and why."""


@dataclass
class StkScriptArguments(ScriptArguments):
    """Script arguments: TRL's dataset fields plus stk-vqa's image and LoRA options."""

    dataset_test_split: str = field(
        default="validation", metadata={"help": "Dataset split for evaluation (stk-vqa builds `validation`)."}
    )
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Side in pixels every image is resized to (no splitting); a multiple of patch_size * scale_factor "
            "(64 for SmolVLM: 512 -> 64 image tokens, 384 -> 36, 256 -> 16). Default: the model's vision image size."
        },
    )
    lora_scope: Literal["text", "all"] = field(
        default="text",
        metadata={
            "help": "`text`: LoRA on `lora_target_modules` of the text model only, vision tower frozen; `all`: on "
            "every module with those names (vision tower included, as the original project did)."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N rows only."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N rows only."})
    record_rows: bool = field(
        default=False,
        metadata={
            "help": "Write the conversation of every row each process collates to "
            "`<output_dir>/rows/rank-<R>.jsonl` (audits data sharding across processes)."
        },
    )
    loss_curve: bool = field(default=True, metadata={"help": "Write `<output_dir>/loss_curve.png` at the end."})
    vision_feature_reuse: bool = field(
        default=False,
        metadata={
            "help": "Encode each distinct image of a batch once, even when several rows share it (vision tower "
            "frozen: lora_scope text)."
        },
    )
    vision_feature_cache: str | None = field(
        default=None,
        metadata={
            "help": "A safetensors file of the connector output of every distinct image of the dataset, computed once "
            "(created or extended when images are missing) and fed to the model instead of pixel values, so the "
            "vision tower does not run during training (vision tower frozen: lora_scope text)."
        },
    )
    vision_feature_cache_batch_size: int = field(
        default=32, metadata={"help": "Images per vision-encoder batch while building the feature cache."}
    )


DATACLASSES = (StkScriptArguments, SFTConfig, ModelConfig)


# --------------------------------------------------------------------------------------------------------------------
# Recipe parsing


def make_parser() -> TrlParser:
    """A ``TrlParser`` over the three dataclasses, with stk-vqa's defaults (overridable by recipe and CLI).

    Precision follows the device unless the recipe says otherwise: bf16 weights and autocast on CUDA, fp32 on CPU
    (bf16 is tens of times slower on CPUs without bf16 units).
    """
    import torch

    parser = TrlParser(DATACLASSES)
    cuda = torch.cuda.is_available()
    parser.set_defaults(
        assistant_only_loss=True,
        report_to=["tensorboard"],
        attn_implementation="sdpa",
        bf16=cuda,
        dtype="bfloat16" if cuda else "float32",
        gradient_checkpointing=False,
    )
    return parser


def _recipe_argv(argv: list[str]) -> tuple[list[str], str | None]:
    """Turn ``RECIPE.yaml [--flags]`` into TrlParser's ``--config RECIPE.yaml [--flags]``; return (argv, recipe path)."""
    argv = list(argv)
    if argv and not argv[0].startswith("-") and argv[0].endswith((".yaml", ".yml")):
        argv = ["--config", *argv]
    recipe = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None
    return argv, recipe


def _check_value(action, value) -> None:
    """Raise ``ValueError`` if ``value`` (from YAML) does not fit the argparse ``action`` of its field."""
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and action.nargs not in ("+", "*") and action.type not in (None, str):
        raise ValueError(f"expected one value, got a list {value!r}")
    if isinstance(value, dict) and action.type not in (None, str):
        raise ValueError(f"expected a {getattr(action.type, '__name__', 'value')}, got a mapping")
    for item in values:
        if item is None or isinstance(item, dict):
            continue
        if action.choices is not None and str(item) not in {str(choice) for choice in action.choices}:
            raise ValueError(f"{item!r} is not one of {sorted(str(c) for c in action.choices)}")
        if isinstance(item, bool) and getattr(action.type, "__name__", "") == "string_to_bool":
            continue
        if action.type in (int, float) and isinstance(item, bool):
            raise ValueError(f"expected {action.type.__name__}, got {item!r}")
        if action.type is not None and action.type is not str:
            try:
                converted = action.type(str(item))
            except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
                name = getattr(action.type, "__name__", "value").replace("string_to_bool", "bool")
                raise ValueError(f"expected {name}, got {item!r}") from error
            if action.type is int and isinstance(item, float) and converted != item:
                raise ValueError(f"expected int, got {item!r}")


def validate_recipe(path: str | os.PathLike, parser: TrlParser | None = None) -> dict[str, Any]:
    """Read a YAML recipe and check every field exists and has the right type; return the mapping.

    Raises :class:`RecipeError` naming the file and the field (with a close match for misspelt names).
    """
    import yaml

    parser = parser or make_parser()
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"recipe {path} not found") from None
    except yaml.YAMLError as error:
        raise RecipeError(f"recipe {path} is not valid YAML: {error}") from None
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise RecipeError(f"recipe {path} must be a YAML mapping of field: value, got {type(config).__name__}")
    actions = {action.dest: action for action in parser._actions if action.dest != "help"}
    for key, value in config.items():
        if key == "env":
            if not isinstance(value, dict):
                raise RecipeError(f"recipe {path}: field 'env' must be a mapping of environment variables")
            continue
        if key not in actions:
            close = difflib.get_close_matches(str(key), list(actions), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecipeError(
                f"recipe {path}: unknown field {key!r}{hint}; fields are those of StkScriptArguments, "
                "trl.SFTConfig and trl.ModelConfig (see `scripts/sft.py --help`)"
            )
        try:
            _check_value(actions[key], value)
        except ValueError as error:
            raise RecipeError(f"recipe {path}: field {key!r}: {error}") from None
    return config


def parse_recipe(argv: list[str] | None = None) -> tuple[StkScriptArguments, SFTConfig, ModelConfig]:
    """Parse ``[RECIPE.yaml | --config RECIPE.yaml] [--field value ...]`` into the three dataclasses."""
    argv, recipe = _recipe_argv(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    if recipe is not None:
        validate_recipe(recipe, parser)
    try:
        script_args, training_args, model_args = parser.parse_args_and_config(argv)
    except ValueError as error:  # e.g. SFTConfig's own consistency checks
        raise RecipeError(f"recipe {recipe or '(command line)'}: {error}") from None
    if not script_args.dataset_name:
        raise RecipeError(f"recipe {recipe or '(command line)'}: field 'dataset_name' is required")
    if not model_args.model_name_or_path:
        raise RecipeError(f"recipe {recipe or '(command line)'}: field 'model_name_or_path' is required")
    if str(script_args.vision_feature_cache).strip().lower() in ("", "none", "null", "false"):
        script_args.vision_feature_cache = None  # `--vision_feature_cache none` turns a recipe's cache off
    if script_args.lora_scope == "all" and (script_args.vision_feature_reuse or script_args.vision_feature_cache):
        field_name = "vision_feature_cache" if script_args.vision_feature_cache else "vision_feature_reuse"
        raise RecipeError(
            f"recipe {recipe or '(command line)'}: field {field_name!r} needs a frozen vision tower, but "
            "lora_scope: all trains LoRA on it; use lora_scope: text, or turn reuse off (vision_feature_reuse: false, "
            "vision_feature_cache: null)"
        )
    training_args.resume_from_checkpoint = _resolve_resume(training_args)
    return script_args, training_args, model_args


def _resolve_resume(training_args: SFTConfig) -> str | None:
    """``--resume_from_checkpoint true|last`` means the newest complete ``checkpoint-*`` in ``output_dir``."""
    value = training_args.resume_from_checkpoint
    if value is None or str(value).lower() in ("false", "none", ""):
        return None
    if str(value).lower() in ("true", "last"):
        last = last_complete_checkpoint(training_args.output_dir)
        if last is None:
            raise RecipeError(f"resume_from_checkpoint={value}: no complete checkpoint-* folder in {training_args.output_dir}")
        return last
    if not os.path.isfile(os.path.join(value, "trainer_state.json")):
        raise RecipeError(f"resume_from_checkpoint: {value} is not a complete checkpoint (no trainer_state.json)")
    return value


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The highest-step ``checkpoint-N`` folder whose ``trainer_state.json`` exists (the Trainer writes it last).

    A run killed while saving leaves a partial ``checkpoint-N`` behind; ``get_last_checkpoint`` would pick it.
    """
    import re

    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    steps = []
    for path in folder.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and path.is_dir():
            steps.append((int(match.group(1)), path))
    for step, path in sorted(steps, reverse=True):
        if (path / "trainer_state.json").is_file():
            return os.fspath(path)
        logger.warning("skipping incomplete checkpoint %s (no trainer_state.json)", path)
    return None


# --------------------------------------------------------------------------------------------------------------------
# Data, model, LoRA


def load_training_data(script_args: StkScriptArguments, with_eval: bool = True):
    """Load the DatasetDict (local folder or Hub id) and return ``(train, eval or None)``, checked for the VLM columns."""
    from datasets import load_dataset

    name = script_args.dataset_name
    try:
        dataset = load_dataset(name, name=script_args.dataset_config, streaming=script_args.dataset_streaming)
    except FileNotFoundError as error:
        raise RecipeError(f"dataset {name!r} not found (a local folder or a Hub dataset id): {error}") from None
    splits = list(dataset)
    wanted = [script_args.dataset_train_split] + ([script_args.dataset_test_split] if with_eval else [])
    for split in wanted:
        if split not in dataset:
            raise RecipeError(f"dataset {name}: no split {split!r} (it has {splits})")
        columns = dataset[split].column_names or []
        missing = [column for column in REQUIRED_COLUMNS if column not in columns]
        if missing:
            raise RecipeError(
                f"dataset {name}, split {split!r}: missing column(s) {missing}; a vision-language SFT dataset needs "
                f"'images' (a list of images per row) and 'messages' (the chat), it has {columns}"
            )
    train = _first(dataset[script_args.dataset_train_split], script_args.max_train_samples)
    evaluation = _first(dataset[script_args.dataset_test_split], script_args.max_eval_samples) if with_eval else None
    return train, evaluation


def _first(split, n: int | None):
    """The first ``n`` rows of a split (all when ``n`` is None); works for streamed splits too."""
    from datasets import IterableDataset

    if n is None:
        return split
    if isinstance(split, IterableDataset):
        return split.take(n)
    return split.select(range(min(n, len(split))))


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
    from stk_vqa.tiny_model import image_seq_len

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


def effective_recipe(script_args, training_args, model_args) -> dict[str, Any]:
    """Every field of the run that differs from its dataclass default (what the model card and recipe.yaml show)."""
    import enum

    def plain(value):
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if value is None or isinstance(value, (str, int, float, bool)):
            return value
        return str(value)

    out: dict[str, Any] = {}
    secrets = {"hub_token", "push_to_hub_token"}
    for args in (model_args, script_args, training_args):
        for f in dataclasses.fields(args):
            if f.name in secrets or f.name.startswith("_") or not f.init:
                continue
            default = f.default if f.default is not dataclasses.MISSING else None
            if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            value = getattr(args, f.name, None)
            if plain(value) != plain(default):
                out[f.name] = plain(value)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Trainer


class StkSFTTrainer(SFTTrainer):
    """TRL's ``SFTTrainer``; its model card also names the recipe and any evaluation results, and it feeds cached
    image features (``vision_feature_cache``) to the model."""

    stk_recipe: dict[str, Any] | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from stk_vqa.vision_features import attach_image_features

        inputs = attach_image_features(inputs)  # cached features -> mm_encoder_outputs (a no-op without a cache)
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def create_model_card(self, model_name=None, dataset_name=None, tags=None, **kwargs):
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if not self.is_world_process_zero():
            return
        from stk_vqa.training_artifacts import extend_model_card

        extend_model_card(Path(self.args.output_dir) / "README.md", recipe=self.stk_recipe or {})


def build_trainer(script_args: StkScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> StkSFTTrainer:
    """Data + model + processor + LoRA -> a ready ``StkSFTTrainer`` (nothing trained yet)."""
    from transformers import set_seed

    from stk_vqa.training_artifacts import LossCurveCallback
    from stk_vqa.training_collator import RowRecorder

    set_seed(training_args.seed)
    with_eval = training_args.eval_strategy != "no"
    train_dataset, eval_dataset = load_training_data(script_args, with_eval=with_eval)
    model, processor = load_model_and_processor(model_args, script_args, training_args)
    callbacks = [LossCurveCallback()] if script_args.loss_curve else []
    trainer = StkSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=lora_config(model_args, script_args.lora_scope),
        callbacks=callbacks,
    )
    trainer.stk_recipe = effective_recipe(script_args, training_args, model_args)
    setup_vision_feature_reuse(trainer, script_args, [train_dataset, eval_dataset])
    if script_args.record_rows:
        rank = trainer.accelerator.process_index
        path = Path(training_args.output_dir) / "rows" / f"rank-{rank}.jsonl"
        trainer.data_collator = RowRecorder(trainer.data_collator, path)
    return trainer


def setup_vision_feature_reuse(trainer: StkSFTTrainer, script_args: StkScriptArguments, datasets: list) -> None:
    """Turn on in-batch image reuse and / or the offline feature cache (``vision_feature_*`` fields) on ``trainer``.

    The cache is built (or extended) by the first process of each machine; the others then open it.
    """
    if not (script_args.vision_feature_reuse or script_args.vision_feature_cache):
        return
    from stk_vqa.vision_features import (
        CachedFeatureCollator,
        VisionFeatureError,
        check_vision_frozen,
        enable_in_batch_reuse,
        prepare_feature_cache,
    )

    field_name = "vision_feature_cache" if script_args.vision_feature_cache else "vision_feature_reuse"
    try:
        check_vision_frozen(trainer.model, field_name)
        if script_args.vision_feature_reuse:
            enable_in_batch_reuse(trainer.model)
        if script_args.vision_feature_cache:
            with trainer.accelerator.local_main_process_first():  # one build per machine, the others wait
                cache = prepare_feature_cache(
                    script_args.vision_feature_cache,
                    trainer.model,
                    trainer.processing_class,
                    datasets,
                    batch_size=script_args.vision_feature_cache_batch_size,
                    model_name=(trainer.stk_recipe or {}).get("model_name_or_path", ""),
                    progress=not trainer.args.disable_tqdm,
                )
            trainer.data_collator = CachedFeatureCollator(trainer.data_collator, cache)
    except VisionFeatureError as error:
        raise RecipeError(f"field {field_name!r}: {error}") from None


def train(argv: list[str] | None = None) -> StkSFTTrainer:
    """Run a recipe end to end (train, save the adapter, evaluate, model card); return the trainer."""
    import transformers

    from stk_vqa.training_artifacts import write_recipe

    script_args, training_args, model_args = parse_recipe(argv)
    transformers.logging.set_verbosity_warning()
    trainer = build_trainer(script_args, training_args, model_args)
    output_dir = Path(training_args.output_dir)
    if trainer.is_world_process_zero():
        write_recipe(output_dir / "recipe.yaml", trainer.stk_recipe or {})

    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(str(output_dir))  # adapter_config.json + adapter_model.safetensors (+ processor files)
    if trainer.eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.save_metrics("eval", metrics)
    trainer.create_model_card(dataset_name=script_args.dataset_name, tags=["stk-vqa", "supertuxkart", "vqa"])
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name, tags=["stk-vqa", "supertuxkart", "vqa"])
    trainer.accelerator.wait_for_everyone()
    if hasattr(trainer, "end"):
        trainer.end()  # close trackers / process group (transformers >= 5.18)
    return trainer


def main(argv: list[str] | None = None) -> None:
    """Command-line entry (``scripts/sft.py``): recipe problems end with one clear line, not a stack trace."""
    try:
        train(argv)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def train_cli(recipe: str = "recipes/smolvlm_lora.yaml", **overrides) -> str:
    """Train a recipe (same as ``accelerate launch scripts/sft.py RECIPE``); ``--field value`` overrides a field.

    Args:
        recipe: YAML recipe (fields of StkScriptArguments, trl.SFTConfig and trl.ModelConfig).
        **overrides: any recipe field, e.g. ``--max_steps 10 --dataset_name data/my-set``.

    Returns:
        The output folder (adapter, loss curve, model card, logs).
    """
    argv = [recipe]
    for key, value in overrides.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        argv += [f"--{key}", *(str(v) for v in values)]
    try:
        return train(argv).args.output_dir
    except RecipeError as error:
        raise SystemExit(f"error: {error}") from None
