"""The trainer: TRL's ``SFTTrainer`` with the stk-vqa run recorded in its model card and cached image features fed
to the model, plus the switches that turn on vision-feature reuse and row recording."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trl import SFTTrainer

from stk_vqa.training.configs import RecipeError, StkScriptArguments


class StkSFTTrainer(SFTTrainer):
    """TRL's ``SFTTrainer``; its model card also names the recipe (``recipe``: the fields that differ from their
    defaults) and any evaluation results, and it feeds cached image features (``vision_feature_cache``) to the
    model."""

    def __init__(self, *args, recipe: dict[str, Any] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.stk_recipe = recipe or {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from stk_vqa.training.vision_features import attach_image_features

        inputs = attach_image_features(inputs)  # cached features -> mm_encoder_outputs (a no-op without a cache)
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def create_model_card(self, model_name=None, dataset_name=None, tags=None, **kwargs):
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if not self.is_world_process_zero():
            return
        from stk_vqa.training.artifacts import extend_model_card

        extend_model_card(Path(self.args.output_dir) / "README.md", recipe=self.stk_recipe)


def setup_vision_feature_reuse(trainer: StkSFTTrainer, script_args: StkScriptArguments, datasets: list) -> None:
    """Turn on in-batch image reuse and / or the offline feature cache (``vision_feature_*`` fields) on ``trainer``.

    The cache is built (or extended) by the first process of each machine; the others then open it.
    """
    if not (script_args.vision_feature_reuse or script_args.vision_feature_cache):
        return
    from stk_vqa.training.vision_features import (
        CachedFeatureCollator,
        VisionFeatureError,
        enable_in_batch_reuse,
        prepare_feature_cache,
    )

    field_name = "vision_feature_cache" if script_args.vision_feature_cache else "vision_feature_reuse"
    try:
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
                    model_name=trainer.stk_recipe.get("model_name_or_path", ""),
                    progress=not trainer.args.disable_tqdm,
                )
            trainer.data_collator = CachedFeatureCollator(trainer.data_collator, cache)
    except VisionFeatureError as error:
        raise RecipeError(f"field {field_name!r}: {error}") from None


def record_rows(trainer: StkSFTTrainer) -> None:
    """Append the conversation of every row this process collates to ``<output_dir>/rows/rank-<R>.jsonl``."""
    from stk_vqa.training.collators import RowRecorder

    path = Path(trainer.args.output_dir) / "rows" / f"rank-{trainer.accelerator.process_index}.jsonl"
    trainer.data_collator = RowRecorder(trainer.data_collator, path)
