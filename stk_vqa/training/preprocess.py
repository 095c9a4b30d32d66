"""The pre-processed input path (``preprocess_rows: true``): each row tokenised once, collation is padding + images.

TRL's ``DataCollatorForVisionLanguageModeling`` renders the chat, tokenises it, masks the non-assistant tokens and
runs the image processor for every row of every batch, in the DataLoader worker (about 22 ms per row on one core for
SmolVLM at 512 px, nearly all of it PIL image processing). Here:

* :func:`tokenize_rows` runs **TRL's own collator** once per row, ahead of training (a ``datasets`` map, cached on
  disk under a fingerprint of the dataset and the processor), and keeps its ``input_ids`` and ``labels`` (without
  padding) and the content key of each row's image(s). The token ids do not depend on the pixels (one image per row,
  no splitting: every image becomes ``image_seq_len`` image tokens), so this pass gives the collator a 1x1
  placeholder image and skips the pixel work;
* :class:`PreprocessedCollator` pads those rows exactly as TRL's collator pads (same ``input_ids`` / ``labels`` /
  ``attention_mask``, tested) and adds, per distinct image of the batch, either its cached connector features
  (``vision_feature_cache``) or the image as stored (uint8, decoded from the dataset's bytes) plus ``image_index``,
  the distinct image of each image slot;
* :func:`encode_batch_images` (called by the trainer on the device) resizes and normalises the uint8 images with
  :class:`~stk_vqa.training.image_transforms.DeviceImageProcessor` (Pillow-exact) and encodes each distinct image
  once; the features then go to the model as ``mm_encoder_outputs``, as cached ones do.

:class:`ImageGroupedSampler` (``group_batches_by_image: true``) orders an epoch so that the rows of one image are
consecutive, so a batch holds few distinct images and each is encoded once.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import logging
import math
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from stk_vqa.training.feature_cache import image_key

logger = logging.getLogger(__name__)

PREPROCESS_FORMAT = "stk-vqa-preprocessed/1"
TOKEN_COLUMNS = ("input_ids", "labels", "image_keys")
"""Columns :func:`tokenize_rows` adds; the ``images`` column is kept (undecoded bytes)."""
REUSE_MIN_SAVED = 0.05
"""In-batch reuse by pixel comparison is turned off when it would save fewer than this fraction of the encodes."""


# --------------------------------------------------------------------------------------------------------------------
# Tokenising once, with TRL's collator


def placeholder_image():
    from PIL import Image

    return Image.new("RGB", (1, 1))


def text_only_collator(collator):
    """A copy of TRL's vision-language ``collator`` that processes no pixels (token ids and labels unchanged).

    Its processor's image processor leaves a 1x1 placeholder as it is (no resize, rescale, normalise or pad), which
    only works because the image tokens do not depend on the pixels: splitting must be off (checked).
    """
    image_processor = getattr(collator.processor, "image_processor", None)
    if image_processor is None or getattr(image_processor, "do_image_splitting", False):
        raise ValueError("preprocess_rows needs an Idefics3-style processor with do_image_splitting=False")
    image_processor = copy.deepcopy(image_processor)
    image_processor.do_resize = image_processor.do_rescale = image_processor.do_normalize = False
    image_processor.do_pad = False
    image_processor.max_image_size = {"longest_edge": 1}  # the no-splitting branch squares to this size: 1x1 stays
    processor = copy.copy(collator.processor)
    processor.image_processor = image_processor
    return dataclasses.replace(collator, processor=processor)


def processing_fingerprint(collator) -> str:
    """A digest of everything :func:`tokenize_rows`' output depends on besides the rows."""
    processor = collator.processor
    tokenizer = getattr(processor, "tokenizer", processor)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    signature = {
        "format": PREPROCESS_FORMAT,
        "tokenizer": backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items())),
        "chat_template": collator.chat_template or getattr(processor, "chat_template", None),
        "image_seq_len": getattr(processor, "image_seq_len", None),
        "max_length": collator.max_length,
        "assistant_only_loss": collator.assistant_only_loss,
        "splitting": getattr(processor.image_processor, "do_image_splitting", None),
    }
    return hashlib.blake2b(json.dumps(signature, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def _decode(image: dict):
    """A PIL image from the ``{"bytes", "path"}`` of an undecoded ``datasets.Image`` (as ``datasets`` decodes it)."""
    from PIL import Image

    if image.get("bytes") is not None:
        decoded = Image.open(io.BytesIO(image["bytes"]))
    else:
        decoded = Image.open(image["path"])
    decoded.load()
    return decoded


def _tokenize_batch(batch: dict[str, list], collator) -> dict[str, list]:
    placeholder = placeholder_image()
    examples = [
        {"messages": messages, "images": [placeholder] * len(images)}
        for messages, images in zip(batch["messages"], batch["images"], strict=True)
    ]
    out = collator(examples)
    lengths = out["attention_mask"].sum(dim=1).tolist()  # right padding: a row's tokens come first
    input_ids, labels = out["input_ids"].tolist(), out["labels"].tolist()
    return {
        "input_ids": [ids[:n] for ids, n in zip(input_ids, lengths, strict=True)],
        "labels": [row[:n] for row, n in zip(labels, lengths, strict=True)],
        "image_keys": [[image_key(_decode(image)) for image in images] for images in batch["images"]],
    }


def tokenize_rows(dataset, collator, num_proc: int | None = None, keep: Sequence[str] = (), batch_size: int = 256):
    """``dataset`` (``images`` + ``messages`` rows) with each row tokenised once by TRL's ``collator``.

    Returns a dataset of ``input_ids``, ``labels`` (-100 outside the assistant turns, as the collator makes them),
    ``image_keys`` (content keys of the row's images) and ``images`` (not decoded), plus the ``keep`` columns. Cached
    by ``datasets`` under a fingerprint of the dataset and the processor (a second run reads it back).
    """
    import datasets

    columns = dataset.column_names
    missing = [name for name in ("images", "messages") if name not in columns]
    if missing:
        raise ValueError(f"preprocess_rows needs the columns images and messages; missing {missing}")
    dataset = dataset.cast_column("images", datasets.Sequence(datasets.Image(decode=False)))
    fingerprint = hashlib.blake2b(
        f"{dataset._fingerprint}:{processing_fingerprint(collator)}:{sorted(keep)}".encode(), digest_size=16
    ).hexdigest()
    features = datasets.Features(
        {
            **{name: dataset.features[name] for name in ("images", *keep)},
            "input_ids": datasets.Sequence(datasets.Value("int32")),
            "labels": datasets.Sequence(datasets.Value("int32")),
            "image_keys": datasets.Sequence(datasets.Value("binary")),
        }
    )
    return dataset.map(
        _tokenize_batch,
        fn_kwargs={"collator": text_only_collator(collator)},
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        remove_columns=[name for name in columns if name not in ("images", *keep)],
        features=features,
        new_fingerprint=fingerprint,
        desc="tokenising rows once",
    )


# --------------------------------------------------------------------------------------------------------------------
# Collation: padding + images


def uint8_image(image) -> Any:
    """A ``(3, H, W)`` uint8 tensor of a PIL image (converted to RGB as the processor does)."""
    import numpy as np
    import torch

    array = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


@dataclasses.dataclass
class PreprocessedCollator:
    """Pads :func:`tokenize_rows` rows (right, like TRL's collator) and adds their images.

    Output: ``input_ids``, ``attention_mask``, ``labels``; when the rows have images, ``image_index`` (per image slot,
    in row order, the index of its distinct image) and either ``image_features`` (distinct images' cached connector
    output, ``cache`` given) or ``images_uint8`` (distinct images as stored: a ``(D, 3, H, W)`` uint8 tensor, or a
    list of ``(3, H, W)`` tensors when sizes differ). With ``dedupe=False`` every image slot is its own image.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    cache: Any = None
    dedupe: bool = True

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        length = max(len(row["input_ids"]) for row in rows)
        if self.pad_to_multiple_of:
            length = math.ceil(length / self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), length), -100, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            input_ids[i, :n] = torch.tensor(row["input_ids"], dtype=torch.long)
            labels[i, :n] = torch.tensor(row["labels"], dtype=torch.long)
            attention_mask[i, :n] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

        slots = [(key, image) for row in rows for key, image in zip(row["image_keys"], row["images"], strict=True)]
        if not slots:
            return batch
        distinct: dict[bytes, int] = {}
        index, chosen = [], []
        for position, (key, image) in enumerate(slots):
            slot_id = key if self.dedupe else position
            if slot_id not in distinct:
                distinct[slot_id] = len(chosen)
                chosen.append((key, image))
            index.append(distinct[slot_id])
        batch["image_index"] = torch.tensor(index, dtype=torch.long)
        if self.cache is not None:
            batch["image_features"] = self.cache.lookup([key for key, _ in chosen], where=" of this batch")
        else:
            images = [uint8_image(_decode(image)) for _, image in chosen]
            same = all(image.shape == images[0].shape for image in images)
            batch["images_uint8"] = torch.stack(images) if same else images
        return batch


def encode_batch_images(core, inputs: dict[str, Any], device_processor) -> dict[str, Any]:
    """Replace a batch's ``images_uint8`` (on the device) by ``image_features``: each distinct image resized and
    normalised by ``device_processor`` and encoded once by the vision tower of ``core`` (with gradients when the tower
    or the connector trains: the rows of an image share its features, so their gradients are summed)."""
    import torch

    from stk_vqa.training.image_transforms import stack_by_size
    from stk_vqa.training.vision_features import trainable_vision_parameters

    if "images_uint8" not in inputs:
        return inputs
    inputs = dict(inputs)
    images = inputs.pop("images_uint8")
    groups = [(list(range(images.shape[0])), images)] if torch.is_tensor(images) else stack_by_size(images)
    features = [None] * sum(len(positions) for positions, _ in groups)
    with torch.set_grad_enabled(torch.is_grad_enabled() and bool(trainable_vision_parameters(core))):
        for positions, group in groups:
            out = core.get_image_features(pixel_values=device_processor(group), return_dict=True)
            for position, feature in zip(positions, out.pooler_output, strict=True):
                features[position] = feature
    inputs["image_features"] = torch.stack(features)
    return inputs


# --------------------------------------------------------------------------------------------------------------------
# Sampling: an image's rows in one batch


class ImageGroupedSampler:
    """Row indices for one epoch with each image's rows consecutive: images in a random order, and the rows of an
    image in a random order, both reshuffled every epoch (``set_epoch``). Consecutive batches of B rows then hold
    about B / (rows per image) + 1 distinct images.

    ``rows_per_image=k``: each epoch takes only the first k rows of each image's shuffled rows (a new pick every
    epoch), so an epoch visits every image with at most k of its questions."""

    def __init__(self, keys: Sequence, seed: int = 0, rows_per_image: int | None = None):
        if rows_per_image is not None and rows_per_image < 1:
            raise ValueError(f"rows_per_image must be at least 1, got {rows_per_image}")
        groups: dict[Any, list[int]] = {}
        for index, key in enumerate(keys):
            groups.setdefault(key, []).append(index)
        self.groups = list(groups.values())
        self.seed = seed
        self.epoch = 0
        self.rows_per_image = rows_per_image
        self._length = sum(len(group) if rows_per_image is None else min(rows_per_image, len(group))
                           for group in self.groups)  # fmt: skip

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[int]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        order = list(range(len(self.groups)))
        rng.shuffle(order)
        for group in order:
            rows = list(self.groups[group])
            rng.shuffle(rows)
            yield from rows[: self.rows_per_image]


def row_keys(dataset) -> list:
    """An image identity per row: its ``image_keys`` (pre-processed), else ``image_file``, else the images' content."""
    columns = dataset.column_names or []
    if "image_keys" in columns:
        return [tuple(keys) for keys in dataset["image_keys"]]
    if "image_file" in columns:
        return list(dataset["image_file"])
    rows = dataset.select_columns(["images"])
    return [tuple(image_key(image) for image in row["images"]) for row in rows]


def expected_reuse(keys: Sequence, batch_size: int, grouped: bool = False) -> float:
    """Expected fraction of a batch's image encodes that in-batch reuse saves.

    Random batches of ``batch_size`` rows: ``1 - E[distinct images] / batch_size`` with ``E[distinct] = sum over
    images of 1 - (1 - rows_of_image / rows) ** batch_size``. Grouped batches (:class:`ImageGroupedSampler`): about
    ``1 - (batch_size / mean rows per image + 1) / batch_size``.
    """
    counts = Counter(keys)
    rows = sum(counts.values())
    if rows == 0 or batch_size < 2:
        return 0.0
    if grouped:
        distinct = min(batch_size, batch_size / (rows / len(counts)) + 1)
    else:
        distinct = sum(1 - (1 - count / rows) ** batch_size for count in counts.values())
    return max(0.0, 1 - distinct / batch_size)
