"""The offline vision-feature cache: the connector output of every distinct image of the dataset, computed once
and stored in one safetensors file (:class:`FeatureCache`, :func:`prepare_feature_cache`);
:class:`CachedFeatureCollator` swaps each row's ``pixel_values`` for its cached features, which the model takes as
``mm_encoder_outputs`` (transformers 5's name for what was ``image_hidden_states``): the vision tower does not run at
all during training. It needs a frozen vision tower (cached features would go stale as it trains).

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

from stk_vqa.training.vision_features import VisionFeatureError, check_vision_frozen, vision_language_core

logger = logging.getLogger(__name__)

CACHE_FORMAT = "stk-vqa-vision-features/1"
KEY_BYTES = 16

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
