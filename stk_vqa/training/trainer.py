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
        self.stk_train_sampler = None  # group_batches_by_image: an ImageGroupedSampler
        self.stk_device_images = None  # preprocess_rows without a cache: the on-device image processor
        self.stk_columns = None  # preprocess_rows: the dataset columns the collator reads

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from stk_vqa.training.feature_cache import attach_image_features
        from stk_vqa.training.preprocess import encode_batch_images
        from stk_vqa.training.vision_features import vision_language_core

        if "images_uint8" in inputs:  # pre-processed rows: resize, normalise and encode on the device
            inputs = encode_batch_images(vision_language_core(model), inputs, self.stk_device_images)
        inputs = attach_image_features(inputs)  # cached / computed features -> mm_encoder_outputs
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def _get_train_sampler(self, train_dataset=None):
        if self.stk_train_sampler is not None:
            return self.stk_train_sampler
        return super()._get_train_sampler(train_dataset)

    def _set_signature_columns_if_needed(self):
        if self.stk_columns is not None:
            self._signature_columns = list(self.stk_columns)
        super()._set_signature_columns_if_needed()

    def create_model_card(self, model_name=None, dataset_name=None, tags=None, **kwargs):
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if not self.is_world_process_zero():
            return
        from stk_vqa.training.artifacts import extend_model_card

        extend_model_card(Path(self.args.output_dir) / "README.md", recipe=self.stk_recipe)


FROZEN_VISION_FIELDS = ("vision_feature_cache",)
"""Fields that need the vision tower frozen: cached features would go stale while it trains. In-batch reuse and
pre-processed rows work with a trainable tower too (an image's features are one tensor: gradients are summed)."""


def setup_input_path(trainer: StkSFTTrainer, script_args: StkScriptArguments, datasets: list) -> None:
    """Set up how rows reach the model (the ``vision_feature_*``, ``preprocess_rows`` and ``group_batches_by_image``
    fields): the offline feature cache, rows tokenised once, the image-grouping sampler, in-batch image reuse.

    The cache and the tokenised rows are built by the first process of each machine; the others then open them.
    """
    from stk_vqa.training.vision_features import VisionFeatureError

    asked = [name for name in FROZEN_VISION_FIELDS if getattr(script_args, name)]
    field_name = asked[0] if asked else "group_batches_by_image"
    try:
        cache = None
        if asked:
            from stk_vqa.training.vision_features import check_vision_frozen

            check_vision_frozen(trainer.model, field_name)
        if script_args.vision_feature_cache:
            cache = _prepare_cache(trainer, script_args, datasets)
        if script_args.preprocess_rows:
            _use_preprocessed_rows(trainer, script_args, cache)
        elif cache is not None:
            from stk_vqa.training.feature_cache import CachedFeatureCollator

            trainer.data_collator = CachedFeatureCollator(trainer.data_collator, cache)
        keys = None
        if script_args.group_batches_by_image or (script_args.vision_feature_reuse and not script_args.preprocess_rows):
            from stk_vqa.training.preprocess import row_keys

            keys = row_keys(trainer.train_dataset)
        if script_args.group_batches_by_image:
            from stk_vqa.training.preprocess import ImageGroupedSampler

            trainer.stk_train_sampler = ImageGroupedSampler(
                keys, seed=trainer.args.seed, rows_per_image=script_args.rows_per_image
            )
        if script_args.vision_feature_reuse and not script_args.preprocess_rows and cache is None:
            _enable_pixel_reuse_if_it_fires(trainer, script_args, keys)
    except VisionFeatureError as error:
        raise RecipeError(f"field {field_name!r}: {error}") from None


setup_vision_feature_reuse = setup_input_path  # the earlier name


def _prepare_cache(trainer: StkSFTTrainer, script_args: StkScriptArguments, datasets: list):
    from stk_vqa.training.feature_cache import prepare_feature_cache

    with trainer.accelerator.local_main_process_first():  # one build per machine, the others wait
        return prepare_feature_cache(
            script_args.vision_feature_cache,
            trainer.model,
            trainer.processing_class,
            datasets,
            batch_size=script_args.vision_feature_cache_batch_size,
            model_name=trainer.stk_recipe.get("model_name_or_path", ""),
            progress=not trainer.args.disable_tqdm,
        )


def _use_preprocessed_rows(trainer: StkSFTTrainer, script_args: StkScriptArguments, cache) -> None:
    """Swap the trainer's datasets for rows tokenised once and its collator for :class:`PreprocessedCollator`."""
    from stk_vqa.training.image_transforms import DeviceImageProcessor
    from stk_vqa.training.preprocess import TOKEN_COLUMNS, PreprocessedCollator, tokenize_rows

    collator = trainer.data_collator
    keep = ("messages",) if script_args.record_rows else ()
    try:
        with trainer.accelerator.local_main_process_first():  # one tokenising pass per machine (datasets' cache)
            trainer.train_dataset = tokenize_rows(
                trainer.train_dataset, collator, script_args.preprocess_num_proc, keep
            )
            if trainer.eval_dataset is not None:
                trainer.eval_dataset = tokenize_rows(
                    trainer.eval_dataset, collator, script_args.preprocess_num_proc, keep
                )
        if cache is None:
            trainer.stk_device_images = DeviceImageProcessor(trainer.processing_class.image_processor)
    except ValueError as error:
        raise RecipeError(f"field 'preprocess_rows': {error}") from None
    trainer.stk_columns = (*TOKEN_COLUMNS, "images", *keep)
    trainer.data_collator = PreprocessedCollator(
        pad_token_id=trainer.processing_class.tokenizer.pad_token_id,
        pad_to_multiple_of=collator.pad_to_multiple_of,
        cache=cache,
        dedupe=script_args.vision_feature_reuse,
    )


def _enable_pixel_reuse_if_it_fires(trainer: StkSFTTrainer, script_args: StkScriptArguments, keys) -> None:
    """In-batch reuse by pixel comparison (a ``torch.unique`` over the batch's pixels and a few device syncs per
    step), turned on only when batches are expected to repeat images often enough to pay for it."""
    import logging

    from stk_vqa.training.preprocess import REUSE_MIN_SAVED, expected_reuse
    from stk_vqa.training.vision_features import enable_in_batch_reuse

    saved = expected_reuse(keys, trainer.args.per_device_train_batch_size, script_args.group_batches_by_image)
    if saved < REUSE_MIN_SAVED:
        logging.getLogger(__name__).warning(
            "vision_feature_reuse: off, batches would repeat an image for only %.1f %% of their rows (random "
            "batches of a large dataset); use group_batches_by_image: true to make it fire",
            100 * saved,
        )
        return
    enable_in_batch_reuse(trainer.model)


def record_rows(trainer: StkSFTTrainer) -> None:
    """Append the conversation of every row this process collates to ``<output_dir>/rows/rank-<R>.jsonl``."""
    from stk_vqa.training.collators import RowRecorder

    path = Path(trainer.args.output_dir) / "rows" / f"rank-{trainer.accelerator.process_index}.jsonl"
    trainer.data_collator = RowRecorder(trainer.data_collator, path)
