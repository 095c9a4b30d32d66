"""Run SmolVLM's vision encoder less: once per distinct image of a batch (in-batch reuse), and the model-structure
helpers the feature cache (:mod:`stk_vqa.training.feature_cache`) shares.

With the vision tower frozen (LoRA on the text model only), the connector output an image gives (its
``image_seq_len`` x text-hidden features, 64 x 576 for SmolVLM-256M at 512 px) does not depend on the question
or on training progress, and each image carries several questions. **In-batch reuse** (:func:`enable_in_batch_reuse`):
rows of a batch that share an image (identical ``pixel_values``) are encoded once and the features repeated. It works
inside the model's own forward (a wrapper around ``Idefics3Model.get_image_features``), so DDP, FSDP and DeepSpeed
wrappers see an ordinary forward. It also works while the vision tower trains: the repeated features are the same
tensor, so autograd sums the duplicates' gradients into the one encode (the same gradients as encoding every row,
tested).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

VISION_PREFIXES = ("vision_model.", "connector.")


class VisionFeatureError(ValueError):
    """Feature reuse or a feature cache cannot be used as asked; the message says why and what to do."""


# --------------------------------------------------------------------------------------------------------------------
# Model structure


def vision_language_core(model):
    """The ``Idefics3Model``-like module in ``model`` (PEFT / DDP wrappers included) that encodes and merges images."""
    for module in model.modules():
        if all(hasattr(module, name) for name in ("inputs_merger", "get_image_features", "vision_model")):
            return module
    raise VisionFeatureError(
        f"{type(model).__name__} has no Idefics3-style vision tower (get_image_features + inputs_merger): "
        "vision-feature reuse supports SmolVLM / Idefics3 models"
    )


def trainable_vision_parameters(model) -> list[str]:
    """Names of trainable parameters in the vision tower or the connector (empty when both are frozen)."""
    core = vision_language_core(model)
    return [
        name
        for name, parameter in core.named_parameters()
        if parameter.requires_grad and name.startswith(VISION_PREFIXES)
    ]


def check_vision_frozen(model, what: str = "vision-feature reuse") -> None:
    """Raise :class:`VisionFeatureError` if any vision-tower or connector parameter is trainable."""
    trainable = trainable_vision_parameters(model)
    if trainable:
        shown = ", ".join(trainable[:3]) + (f" and {len(trainable) - 3} more" if len(trainable) > 3 else "")
        raise VisionFeatureError(
            f"{what} needs a frozen vision tower, but {len(trainable)} vision/connector parameters are trainable "
            f"({shown}); train LoRA on the text model only (lora_scope: text) or turn {what} off"
        )


# --------------------------------------------------------------------------------------------------------------------
# In-batch reuse


def _bitwise(tensor):
    """``tensor`` reinterpreted as integers of the same width (exact comparison, NaN-safe)."""
    import torch

    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    if tensor.dtype == torch.bool:
        return tensor.to(torch.uint8)
    return tensor.contiguous().view(ints[tensor.element_size()])


def distinct_rows(pixel_values, pixel_attention_mask=None):
    """``(first, inverse)``: a row index per distinct image and, per row, the index of its distinct image.

    Rows are equal when their pixels (and pixel masks) are bitwise equal. ``first`` is in first-occurrence order.
    """
    import torch

    rows = pixel_values.shape[0]
    flat = _bitwise(pixel_values.reshape(rows, -1))
    if pixel_attention_mask is not None:
        mask = _bitwise(pixel_attention_mask.reshape(rows, -1)).to(flat.dtype)
        flat = torch.cat([flat, mask], dim=1)
    _, inverse = torch.unique(flat, dim=0, return_inverse=True)
    positions = torch.arange(rows, device=inverse.device)
    first_by_sorted = torch.full((int(inverse.max()) + 1,), rows, device=inverse.device, dtype=positions.dtype)
    first_by_sorted.scatter_reduce_(0, inverse, positions, reduce="amin")
    # renumber distinct images in first-occurrence order
    order = torch.argsort(first_by_sorted)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return first_by_sorted[order], rank[inverse]


def _encode_distinct(original: Callable, core, pixel_values, pixel_attention_mask=None, **kwargs):
    """``original`` (``get_image_features``) on the distinct images only, features repeated for duplicate rows."""
    batch, images_per_row = pixel_values.shape[:2]
    if images_per_row != 1 or batch < 2 or kwargs.get("return_dict") is False:
        core.stk_images_encoded += batch * images_per_row
        return original(pixel_values, pixel_attention_mask, **kwargs)
    first, inverse = distinct_rows(pixel_values, pixel_attention_mask)
    core.stk_images_encoded += int(first.numel())
    if first.numel() == batch:
        return original(pixel_values, pixel_attention_mask, **kwargs)
    mask = pixel_attention_mask[first] if pixel_attention_mask is not None else None
    out = original(pixel_values[first], mask, **kwargs)
    pooled = list(out.pooler_output)  # one (image_seq_len * images, hidden) tensor per distinct row
    out.pooler_output = [pooled[i] for i in inverse.tolist()]
    return out


def enable_in_batch_reuse(model):
    """Make ``model`` encode each distinct image of a batch once; returns the wrapped core module.

    Counts the images it actually encodes in ``core.stk_images_encoded`` (for tests and benchmarks). Idempotent.
    A trainable vision tower gets the duplicates' gradients summed, exactly as if each row had been encoded.
    """
    import functools

    core = vision_language_core(model)
    if getattr(core, "stk_in_batch_reuse", False):
        return core
    original = core.get_image_features  # the bound method of the class
    core.stk_images_encoded = 0
    core.get_image_features = functools.partial(_encode_distinct, original, core)
    core.stk_in_batch_reuse = True
    return core


def count_encoded_images(model) -> Callable[[], int]:
    """A function returning how many images the vision tower of ``model`` has encoded since this call.

    Counts every image that reaches the vision transformer (a forward hook), with or without in-batch reuse.
    """
    core = vision_language_core(model)
    counter = {"images": 0}

    def hook(module, args, kwargs, output):
        pixel_values = kwargs.get("pixel_values", args[0] if args else None)
        counter["images"] += int(pixel_values.shape[0])

    core.vision_model.register_forward_hook(hook, with_kwargs=True)
    return lambda: counter["images"]
