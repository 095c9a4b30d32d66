"""Training run configuration: the three dataclasses of a recipe, exactly as TRL's ``trl/scripts/sft.py`` has them.

A recipe (``recipes/*.yaml``) holds the fields of :class:`StkScriptArguments` (dataset, image size, LoRA scope,
vision-feature reuse), TRL's ``SFTConfig`` (everything ``transformers.TrainingArguments`` has, plus SFT options) and
TRL's ``ModelConfig`` (model, dtype, attention, LoRA, 4-bit). Any field can be overridden on the command line::

    accelerate launch scripts/sft.py recipes/smolvlm_lora.yaml --learning_rate 1e-4

The parser adds no defaults of its own: what a run does is what its recipe says (plus the dataclass defaults).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trl import ModelConfig, ScriptArguments, SFTConfig, TrlParser

from stk_vqa.training.artifacts import check_output_dir, checkpoint_problem, last_complete_checkpoint


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
            "help": "Encode each distinct image of a batch once, even when several rows share it (with a trainable "
            "vision tower too: the duplicates' gradients are summed)."
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
    preprocess_rows: bool = field(
        default=False,
        metadata={
            "help": "Tokenise every row once before training (TRL's own collator, cached by `datasets` under a "
            "fingerprint of the dataset and processor) and collate by padding only: the same input_ids, labels and "
            "attention_mask as TRL's collator. Images go to the device as stored (uint8) and are resized and "
            "normalised there exactly as Pillow and the processor do, each distinct image of a batch encoded once; "
            "with vision_feature_cache their cached features are gathered instead (one image per row, no image "
            "splitting)."
        },
    )
    preprocess_num_proc: int | None = field(
        default=None, metadata={"help": "Processes for the one-off tokenising pass of preprocess_rows."}
    )
    group_batches_by_image: bool = field(
        default=False,
        metadata={
            "help": "Train sampler that puts the rows (questions) of one image next to each other (images and rows "
            "shuffled every epoch), so a batch holds few distinct images and in-batch reuse encodes each once. "
            "Batches then mix fewer images (gradients are more correlated); without it in-batch reuse by pixel "
            "comparison is turned off when random batches would rarely repeat an image."
        },
    )
    rows_per_image: int | None = field(
        default=None,
        metadata={
            "help": "With group_batches_by_image: train on at most this many rows (questions) of each image per "
            "epoch, a new random pick every epoch, so an epoch visits every image at a fraction of the text compute "
            "(the language model's cost is per row, the vision tower's per image). Epochs then hold fewer steps and "
            "a row may be left out of one epoch and picked in another. Default: every row every epoch."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace an earlier run in output_dir (its checkpoints and adapter). Without it (and without "
            "resume_from_checkpoint) an output_dir holding a run is refused."
        },
    )

    def __post_init__(self):
        for name, low, high in (("image_size", 1, 4096), ("max_train_samples", 1, None),
                                ("max_eval_samples", 1, None), ("vision_feature_cache_batch_size", 1, 65536),
                                ("rows_per_image", 1, None)):  # fmt: skip
            value = getattr(self, name)
            if value is not None and (value < low or (high is not None and value > high)):
                raise RecipeError(f"field {name!r}: must be {low} to {high or 'any'}, got {value!r}")
        if str(self.vision_feature_cache).strip().lower() in ("", "none", "null", "false"):
            self.vision_feature_cache = None  # `--vision_feature_cache none` turns a recipe's cache off
        if self.rows_per_image is not None and not self.group_batches_by_image:
            raise RecipeError(
                "field 'rows_per_image' picks rows per image in the image-grouped sampler; set "
                "group_batches_by_image: true with it"
            )
        if self.lora_scope == "all" and self.vision_feature_cache:
            raise RecipeError(
                "field 'vision_feature_cache' needs a frozen vision tower, but lora_scope: all trains LoRA on it; use "
                "lora_scope: text, or turn the cache off (vision_feature_cache: null)"
            )


DATACLASSES = (StkScriptArguments, SFTConfig, ModelConfig)


# --------------------------------------------------------------------------------------------------------------------
# Recipe parsing


def make_parser() -> TrlParser:
    """A ``TrlParser`` over the three dataclasses (``--config RECIPE.yaml`` plus ``--field value`` overrides); a bad
    flag raises :class:`RecipeError` (one line) instead of argparse's usage dump."""

    class RecipeParser(TrlParser):
        def error(self, message):
            raise RecipeError(f"command line: {message}")

    return RecipeParser(DATACLASSES)


def _recipe_argv(argv: list[str]) -> tuple[list[str], str | None]:
    """Turn ``RECIPE.yaml [--flags]`` into TrlParser's ``--config RECIPE.yaml [--flags]``; return (argv, recipe path)."""
    argv = list(argv)
    if argv and not argv[0].startswith("-") and argv[0].endswith((".yaml", ".yml")):
        argv = ["--config", *argv]
    recipe = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None
    return argv, recipe


def _string_fields() -> set[str]:
    """Fields of the three dataclasses typed ``str`` or ``str | None`` (one string, never a list or a number)."""
    import types
    import typing

    names = set()
    for cls in DATACLASSES:
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # a type that cannot be resolved: those fields are not checked here
            continue
        for f in dataclasses.fields(cls):
            hint = hints.get(f.name)
            union = typing.get_origin(hint) in (typing.Union, types.UnionType)
            if hint is str or (union and set(typing.get_args(hint)) == {str, type(None)}):
                names.add(f.name)
    return names


def _check_value(action, value, string_field: bool = False) -> None:
    """Raise ``ValueError`` if ``value`` (from YAML) does not fit the argparse ``action`` of its field."""
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and action.nargs not in ("+", "*") and action.type not in (None, str):
        raise ValueError(f"expected one value, got a list {value!r}")
    if string_field:
        if isinstance(value, list):
            raise ValueError(f"expected one string, got a list {value!r}")
        if isinstance(value, (int, float)):  # YAML reads 00001 as 1 and 1e-3 as a string: say so
            raise ValueError(f"expected a string, got {value!r} (quote it in the YAML file)")
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
    strings = _string_fields()
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
            _check_value(actions[key], value, key in strings)
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
    except ValueError as error:  # SFTConfig's and StkScriptArguments' own consistency checks
        raise RecipeError(f"recipe {recipe or '(command line)'}: {error}") from None
    if not script_args.dataset_name:
        raise RecipeError(f"recipe {recipe or '(command line)'}: field 'dataset_name' is required")
    if not model_args.model_name_or_path:
        raise RecipeError(f"recipe {recipe or '(command line)'}: field 'model_name_or_path' is required")
    training_args.resume_from_checkpoint = _resolve_resume(training_args)
    local = lambda ref: ref if ref and Path(str(ref)).expanduser().exists() else None  # noqa: E731
    inputs = [local(script_args.dataset_name), local(model_args.model_name_or_path), recipe]
    try:
        check_output_dir(training_args.output_dir, inputs, bool(training_args.resume_from_checkpoint),
                         script_args.overwrite_output_dir)  # fmt: skip
    except ValueError as error:
        raise RecipeError(f"recipe {recipe or '(command line)'}: {error}") from None
    return script_args, training_args, model_args


def _resolve_resume(training_args: SFTConfig) -> str | None:
    """``--resume_from_checkpoint true|last`` means the newest complete ``checkpoint-*`` in ``output_dir``."""
    value = training_args.resume_from_checkpoint
    if value is None or str(value).lower() in ("false", "none", ""):
        return None
    if str(value).lower() in ("true", "last"):
        last = last_complete_checkpoint(training_args.output_dir)  # newest whose files all read; logs the others
        if last is None:
            raise RecipeError(
                f"resume_from_checkpoint={value}: no complete checkpoint-* folder in {training_args.output_dir}"
            )
        return last
    if not os.path.isdir(value):
        raise RecipeError(f"resume_from_checkpoint: {value} is not a checkpoint folder")
    problem = checkpoint_problem(value)
    if problem:
        raise RecipeError(f"resume_from_checkpoint: {value} cannot be resumed: {problem}")
    return value


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
