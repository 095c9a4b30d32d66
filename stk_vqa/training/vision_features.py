"""Run SmolVLM's vision encoder less: once per distinct image of a batch, or once per image of the whole dataset.

With the vision tower frozen (LoRA on the text model only), the connector output an image gives (its
``image_seq_len`` x text-hidden features, 64 x 576 for SmolVLM-256M at 512 px) does not depend on the question
or on training progress. The vision tower is about three quarters of a train step on the full model, and each image
carries several questions, so:

* **in-batch reuse** (:func:`enable_in_batch_reuse`): rows of a batch that share an image (identical
  ``pixel_values``) are encoded once and the features repeated. It works inside the model's own forward (a wrapper
  around ``Idefics3Model.get_image_features``), so DDP, FSDP and DeepSpeed wrappers see an ordinary forward. It
  also works while the vision tower trains: the repeated features are the same tensor, so autograd sums the
  duplicates' gradients into the one encode (the same gradients as encoding every row, tested).
* **offline cache** (:class:`FeatureCache`): the connector output of every distinct image of the dataset, computed
  once and stored in one safetensors file; :class:`CachedFeatureCollator` swaps each row's ``pixel_values`` for its
  cached features, which the model takes as ``mm_encoder_outputs`` (transformers 5's name for what was
  ``image_hidden_states``): the vision tower does not run at all during training.

Images are identified by content (a BLAKE2 digest of mode, size and pixels), so the cache does not depend on row
order, file names or metadata columns. A cache also stores the features of a fixed probe image: opening it with a
model whose vision tower, connector or image processing differ fails with a clear error instead of training on
stale features.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CACHE_FORMAT = "stk-vqa-vision-features/1"
KEY_BYTES = 16
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


# --------------------------------------------------------------------------------------------------------------------
# Image identity and encoding


def image_key(image) -> bytes:
    """A 16-byte content digest of a PIL image (mode, size, pixels): equal images share a key."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    digest = hashlib.blake2b(digest_size=KEY_BYTES)
    digest.update(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.digest()


def row_image_keys(example: dict[str, Any]) -> list[bytes]:
    """Keys of a row's images (``images`` list, or a single ``image``), in order."""
    images = example.get("images")
    if images is None:
        images = [example["image"]] if example.get("image") is not None else []
    return [image_key(image) for image in images]


def probe_image(size: int = 64):
    """A fixed, non-trivial RGB test pattern (gradients and a checkerboard) used to fingerprint a vision tower."""
    from PIL import Image

    pixels = bytearray()
    for y in range(size):
        for x in range(size):
            checker = 255 if (x // 8 + y // 8) % 2 else 0
            pixels += bytes(((x * 255) // size, (y * 255) // size, checker))
    return Image.frombytes("RGB", (size, size), bytes(pixels))


def encode_images(model, processor, images: Sequence) -> Any:
    """Connector outputs of ``images`` (one PIL image each), exactly as training would compute them.

    The pixels go through ``processor`` itself (the same call path as TRL's collator), then the model's
    ``get_image_features``. Returns a ``(len(images), image_seq_len, hidden)`` tensor on the CPU, in the model's dtype.
    """
    import torch

    core = vision_language_core(model)
    token = getattr(processor, "image_token", "<image>")
    inputs = processor(text=[token] * len(images), images=[[image] for image in images], return_tensors="pt")
    device = next(core.parameters()).device
    mask = inputs.get("pixel_attention_mask")
    with torch.inference_mode():
        out = core.get_image_features(
            pixel_values=inputs["pixel_values"].to(device),
            pixel_attention_mask=mask.to(device) if mask is not None else None,
            return_dict=True,
        )
    features = torch.stack(list(out.pooler_output))  # (images, seq, hidden): one image per row
    return features.detach().to("cpu")


# --------------------------------------------------------------------------------------------------------------------
# Offline cache


def _processing_signature(processor) -> dict[str, Any]:
    """The image-processing settings cached features depend on (plain JSON values)."""

    def plain(size):
        return None if size is None else {str(k): v for k, v in dict(size).items() if v is not None}

    image_processor = processor.image_processor
    return {
        "image_seq_len": int(getattr(processor, "image_seq_len", 0)),
        "size": plain(getattr(image_processor, "size", None)),
        "max_image_size": plain(getattr(image_processor, "max_image_size", None)),
        "do_image_splitting": bool(getattr(image_processor, "do_image_splitting", False)),
    }


def _features_close(expected, actual) -> tuple[bool, float]:
    """Whether two probe encodings agree to the precision of their dtype; also the relative max difference."""
    import torch

    expected, actual = expected.float(), actual.float()
    if expected.shape != actual.shape:
        return False, float("inf")
    scale = expected.abs().max().clamp(min=1e-6)
    difference = float((expected - actual).abs().max() / scale)
    half = torch.float32 not in (expected.dtype, actual.dtype)
    return difference <= (3e-2 if half else 1e-3), difference


class FeatureCache:
    """Connector outputs of distinct images, one safetensors file: ``keys`` (N x 16 bytes), ``features``
    (N x image_seq_len x hidden) and ``probe`` (the probe image's features); JSON metadata in the header.

    Reads are lazy (memory-mapped, one row per lookup), so a cache larger than memory works and DataLoader worker
    processes each open their own handle.
    """

    def __init__(self, path: str | os.PathLike):
        from safetensors import safe_open

        self.path = Path(path)
        if not self.path.is_file():
            raise VisionFeatureError(f"vision feature cache {self.path} does not exist")
        try:
            with safe_open(str(self.path), framework="pt") as handle:
                self.metadata = dict(handle.metadata() or {})
                keys = handle.get_tensor("keys")
                self.probe = handle.get_tensor("probe")
                shape = handle.get_slice("features").get_shape()
        except Exception as error:  # not a safetensors file, or missing tensors
            raise VisionFeatureError(f"vision feature cache {self.path} cannot be read: {error}") from None
        if self.metadata.get("format") != CACHE_FORMAT:
            raise VisionFeatureError(
                f"{self.path} is not an stk-vqa vision feature cache (metadata format={self.metadata.get('format')!r})"
            )
        self.shape = tuple(shape)
        self.rows = {bytes(row): index for index, row in enumerate(keys.numpy().tolist())}
        self._handle = None
        self._pid = None

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, key: bytes) -> bool:
        return key in self.rows

    def __getstate__(self):  # DataLoader workers re-open the file themselves
        state = dict(self.__dict__)
        state["_handle"] = None
        return state

    def _features(self):
        from safetensors import safe_open

        if self._handle is None or self._pid != os.getpid():
            self._handle = safe_open(str(self.path), framework="pt")
            self._pid = os.getpid()
        return self._handle.get_slice("features")

    def lookup(self, keys: Sequence[bytes], where: str = "") -> Any:
        """Features of ``keys``, a ``(len(keys), image_seq_len, hidden)`` CPU tensor in the cached dtype."""
        import torch

        missing = [key for key in keys if key not in self.rows]
        if missing:
            raise VisionFeatureError(
                f"{len(missing)} image(s){where} are not in the vision feature cache {self.path} (it holds "
                f"{len(self)} images of another dataset?); rebuild it (delete the file) or point "
                "vision_feature_cache at a new file"
            )
        features = self._features()
        if not keys:
            return torch.empty((0, *self.shape[1:]))
        return torch.cat([features[self.rows[key] : self.rows[key] + 1] for key in keys])

    def check_matches(self, model, processor) -> None:
        """Raise :class:`VisionFeatureError` unless ``model`` + ``processor`` reproduce the cached probe features."""
        signature = json.loads(self.metadata.get("processing", "{}"))
        current = _processing_signature(processor)
        if current != signature:
            raise VisionFeatureError(
                f"vision feature cache {self.path} was computed with image processing {signature}, the model's "
                f"processor now has {current} (different image_size?): delete it to rebuild, or use another file"
            )
        close, difference = _features_close(self.probe, encode_images(model, processor, [probe_image()]))
        if not close:
            raise VisionFeatureError(
                f"vision feature cache {self.path} was computed by another vision tower or connector (model "
                f"{self.metadata.get('model')!r}; probe features differ by {difference:.3g} relative): delete it to "
                "rebuild, or point vision_feature_cache at another file"
            )


def _save_cache(path: Path, keys, features, probe, metadata: dict[str, str]) -> None:
    """Write the cache atomically (a temporary file in the same folder, then a rename)."""
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        key_tensor = torch.tensor([list(key) for key in keys], dtype=torch.uint8).reshape(len(keys), KEY_BYTES)
        save_file({"keys": key_tensor, "features": features.contiguous(), "probe": probe.contiguous()}, tmp, metadata)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dataset_images(datasets: Iterable) -> Iterable[tuple[bytes, Any]]:
    """``(key, image)`` for every distinct image of the given datasets (rows with ``images`` or ``image``)."""
    seen: set[bytes] = set()
    for dataset in datasets:
        if dataset is None:
            continue
        columns = [c for c in ("images", "image") if c in (dataset.column_names or [])]
        rows = dataset.select_columns(columns) if columns else dataset
        for row in rows:
            images = row.get("images") or ([row["image"]] if row.get("image") is not None else [])
            for image in images:
                key = image_key(image)
                if key not in seen:
                    seen.add(key)
                    yield key, image


def prepare_feature_cache(
    path: str | os.PathLike,
    model,
    processor,
    datasets: Iterable,
    batch_size: int = 32,
    model_name: str = "",
    progress: bool = True,
) -> FeatureCache:
    """Open the cache at ``path``, encoding and adding any image of ``datasets`` it lacks (all, if it is new).

    An existing cache must match ``model``'s vision tower and ``processor``'s image processing (see
    :meth:`FeatureCache.check_matches`). Returns the opened cache.
    """
    import torch
    from tqdm.auto import tqdm

    check_vision_frozen(model, "vision_feature_cache")
    path = Path(path)
    existing = FeatureCache(path) if path.exists() else None
    if existing is not None:
        existing.check_matches(model, processor)
    was_training = model.training
    model.eval()
    try:
        new_keys, new_features, pending = [], [], []

        def flush():
            if pending:
                new_features.append(encode_images(model, processor, [image for _, image in pending]))
                new_keys.extend(key for key, _ in pending)
                pending.clear()

        bar = tqdm(desc="caching vision features", unit="image", disable=not progress)
        for key, image in dataset_images(datasets):
            if existing is not None and key in existing:
                continue
            pending.append((key, image))
            if len(pending) >= batch_size:
                flush()
                bar.update(batch_size)
        count = len(pending)
        flush()
        bar.update(count)
        bar.close()
        if existing is not None and not new_keys:
            return existing
        probe = encode_images(model, processor, [probe_image()]) if existing is None else existing.probe
    finally:
        model.train(was_training)

    keys, features = list(new_keys), torch.cat(new_features) if new_features else None
    if existing is not None:
        old = existing.lookup(sorted(existing.rows, key=existing.rows.get))
        keys = sorted(existing.rows, key=existing.rows.get) + keys
        features = torch.cat([old, features.to(old.dtype)])
    if features is None:
        raise VisionFeatureError(f"vision_feature_cache {path}: the dataset has no images to cache")
    metadata = {
        "format": CACHE_FORMAT,
        "model": str(model_name),
        "processing": json.dumps(_processing_signature(processor)),
        "dtype": str(features.dtype).replace("torch.", ""),
        "images": str(len(keys)),
    }
    _save_cache(path, keys, features, probe, metadata)
    logger.info("vision feature cache %s: %d images (%d new)", path, len(keys), len(new_keys))
    return FeatureCache(path)


# --------------------------------------------------------------------------------------------------------------------
# Training-side plumbing


class CachedFeatureCollator:
    """Wraps TRL's vision collator: same text, labels and masks, but each row's images become their cached
    connector features (``image_features``) instead of ``pixel_values``.

    The wrapped collator still renders the chat and processes the images (that is what expands each ``<image>``
    into the right number of image tokens); only the pixels are dropped before they reach the device.
    """

    def __init__(self, collator: Callable[[list[dict[str, Any]]], Any], cache: FeatureCache):
        self.collator = collator
        self.cache = cache

    def __call__(self, examples: list[dict[str, Any]]):
        keys = [key for example in examples for key in row_image_keys(example)]
        batch = self.collator(examples)
        batch.pop("pixel_values", None)
        batch.pop("pixel_attention_mask", None)
        if keys:
            batch["image_features"] = self.cache.lookup(keys, where=" of this batch")
        return batch

    def __getattr__(self, name: str):  # e.g. `.processor` of the wrapped collator
        return getattr(self.collator, name)


def attach_image_features(inputs: dict[str, Any]) -> dict[str, Any]:
    """Move a batch's ``image_features`` (from :class:`CachedFeatureCollator`, or per distinct image with an
    ``image_index`` per image slot from the pre-processed path) to the model's ``mm_encoder_outputs``."""
    if "image_features" not in inputs:
        return inputs
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    inputs = dict(inputs)
    features = inputs.pop("image_features")
    index = inputs.pop("image_index", None)
    if index is not None:
        features = features.index_select(0, index.to(features.device))  # distinct images -> image slots
    inputs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=features)}
    return inputs
