"""Batched greedy answers for every compared model, the vision encoder run once per image.

Items are grouped by image and batches are made of whole groups (a group larger than a batch is split). For
each batch the images are opened once and, per compared model:

* prompts are the chat template's user turn (image + question) with the generation prompt; left padding;
* with ``reuse_vision`` each *distinct* image of the batch is resized and normalised once (its questions' tokens
  are spliced after its image tokens, :func:`build_inputs_per_image`), the vision encoder + connector run once
  per distinct image, and
  ``generate`` receives those features (``mm_encoder_outputs``) repeated for each question about the image,
  instead of ``pixel_values`` (which would encode the image once per question). Models whose adapters leave
  the vision tower untouched (text-only LoRA, the bare base) share one encoding when they share a processor;
* greedy decoding with the KV cache, stopping at ``<end_of_utterance>`` (or the tokenizer's EOS); the answer is
  the decoded text after the prompt (the assistant turn), stripped. A generation that hits the token limit is
  marked ``finished=False``.

An image that cannot be opened is skipped (every item about it), reported by the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .items import EvalItem, UnreadableImageError, group_by_image, open_image
from .models import Candidate, LoadedModels

logger = logging.getLogger(__name__)

END_OF_UTTERANCE = "<end_of_utterance>"
ANSWER_TOKEN_MARGIN = 4
"""Extra new tokens allowed beyond the longest gold answer (+ its end-of-utterance token)."""


@dataclass(frozen=True)
class Generation:
    text: str
    finished: bool
    """Stopped at an end token (not cut by ``max_new_tokens``)."""
    n_tokens: int


def prompt_for(processor, question: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def stop_token_ids(tokenizer) -> list[int]:
    ids = []
    eou = tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE)
    if isinstance(eou, int) and eou != tokenizer.unk_token_id:
        ids.append(eou)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def answer_token_budget(tokenizer, answers: Sequence[str], margin: int = ANSWER_TOKEN_MARGIN) -> int:
    """New tokens enough for the longest gold answer as the model writes it (``" answer"``), its end token,
    and ``margin`` more."""
    longest = max((len(tokenizer(" " + a, add_special_tokens=False)["input_ids"]) for a in set(answers)), default=1)
    return longest + 1 + margin


def make_batches(items: Sequence[EvalItem], batch_size: int) -> list[list[int]]:
    """Item indices in batches of at most ``batch_size``, each image's items together where they fit."""
    if batch_size < 1:
        raise ValueError(f"--batch_size must be positive, got {batch_size}")
    batches: list[list[int]] = []
    current: list[int] = []
    for group in group_by_image(items).values():
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            if current and len(current) + len(chunk) > batch_size:
                batches.append(current)
                current = []
            current = current + chunk
    if current:
        batches.append(current)
    return batches


def decode_generation(tokenizer, new_tokens, stop_ids: Sequence[int]) -> Generation:
    """Text of the new tokens up to the first stop token; never raises on garbage tokens."""
    tokens = [int(t) for t in new_tokens]
    cut = next((i for i, t in enumerate(tokens) if t in stop_ids), None)
    kept = tokens if cut is None else tokens[:cut]
    try:
        text = tokenizer.decode(kept, skip_special_tokens=True)
    except Exception:  # a token id outside the tokenizer (e.g. padded embedding rows) decodes to nothing
        text = ""
    return Generation(text=text.strip(), finished=cut is not None, n_tokens=len(kept))


def _processor_key(processor) -> str:
    image_processor = getattr(processor, "image_processor", None)
    return "|".join(
        [
            image_processor.to_json_string() if image_processor is not None else "",
            str(getattr(processor, "image_seq_len", "")),
            str(getattr(processor, "chat_template", "")),
            str(len(processor.tokenizer)),
        ]
    )


def supports_feature_reuse(model) -> bool:
    """Whether ``generate`` takes pre-computed image features (``mm_encoder_outputs``, transformers >= 5.x)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "mm_encoder_outputs" in inspect.signature(base.forward).parameters and hasattr(base, "get_image_features")


@dataclass
class BatchInputs:
    """Model inputs of one batch: one row per question, pixel values once per distinct image."""

    input_ids: Any
    attention_mask: Any
    pixel_values: Any
    """``(n_images, 1, 3, H, W)``: the batch's distinct images, in first-seen order."""
    pixel_attention_mask: Any
    image_of_row: list[int]
    """Index into the distinct images of each row's image."""

    def to(self, device) -> BatchInputs:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return BatchInputs(move(self.input_ids), move(self.attention_mask), move(self.pixel_values),
                           move(self.pixel_attention_mask), self.image_of_row)  # fmt: skip


def _processor_call(processor, texts, images):
    return processor(
        text=texts,
        images=images,
        return_tensors="pt",
        padding=True,
        max_length=None,  # a training max_length saved with an adapter's processor would only trigger a warning
    )


def build_inputs_per_question(processor, questions: Sequence[str], images: Sequence, image_of_row: Sequence[int]):
    """The processor on every (image, question) pair: each image is resized and normalised once per question."""
    enc = _processor_call(processor, [prompt_for(processor, q) for q in questions], [[images[u]] for u in image_of_row])
    first = [list(image_of_row).index(u) for u in range(len(images))]
    mask = enc.get("pixel_attention_mask")
    return BatchInputs(enc["input_ids"], enc["attention_mask"], enc["pixel_values"][first],
                       None if mask is None else mask[first], list(image_of_row))  # fmt: skip


def build_inputs_per_image(processor, questions: Sequence[str], images: Sequence, image_of_row: Sequence[int]):
    """Each distinct image through the processor once; each question's tokens spliced after its image's.

    The chat prompt is ``head <image> tail``. ``head <image>`` goes through the processor with the image (which
    expands ``<image>`` into the image's tokens, ending with a special token, so no BPE merge crosses the splice);
    ``tail`` (the question and the generation prompt) is tokenised alone and appended. Gives the same ids as the
    processor on the whole prompt (checked by :func:`splice_matches`), at a fraction of the image-processing cost.
    """
    import torch

    image_token = processor.image_token
    parts = [prompt_for(processor, q).partition(image_token) for q in questions]
    if any(not sep for _, sep, _ in parts):
        raise ValueError(f"the chat template put no {image_token} in the prompt")
    heads = [parts[list(image_of_row).index(u)][0] for u in range(len(images))]
    enc = _processor_call(processor, [h + image_token for h in heads], [[img] for img in images])
    image_ids = [ids[mask.bool()].tolist() for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
    tails = processor.tokenizer([t for _, _, t in parts], add_special_tokens=False)["input_ids"]
    for u, head in zip(image_of_row, (h for h, _, _ in parts)):
        if head != heads[u]:
            raise ValueError("questions about one image have different prompt heads")
    rows = [image_ids[u] + list(tail) for u, tail in zip(image_of_row, tails)]
    width = max(len(r) for r in rows)
    pad = processor.tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
    attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return BatchInputs(input_ids, attention_mask, enc["pixel_values"], enc.get("pixel_attention_mask"),
                       list(image_of_row))  # fmt: skip


def splice_matches(processor, question: str, image) -> bool:
    """Whether :func:`build_inputs_per_image` gives the processor's own ids and pixels for this question."""
    import torch

    try:
        spliced = build_inputs_per_image(processor, [question], [image], [0])
    except (ValueError, TypeError, AttributeError):
        return False
    whole = build_inputs_per_question(processor, [question], [image], [0])
    same_mask = (spliced.pixel_attention_mask is None) == (whole.pixel_attention_mask is None) and (
        spliced.pixel_attention_mask is None or torch.equal(spliced.pixel_attention_mask, whole.pixel_attention_mask)
    )
    return (
        torch.equal(spliced.input_ids, whole.input_ids)
        and torch.equal(spliced.pixel_values, whole.pixel_values)
        and same_mask
    )


def encode_images(model, inputs: BatchInputs) -> list:
    """Vision encoder + connector output of each distinct image of the batch."""
    out = model.get_image_features(
        pixel_values=inputs.pixel_values, pixel_attention_mask=inputs.pixel_attention_mask, return_dict=True
    )
    return list(out.pooler_output)


def _generate(model, inputs: BatchInputs, features, max_new_tokens, stop_ids, pad_id):
    import torch
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    kwargs = dict(
        input_ids=inputs.input_ids,
        attention_mask=inputs.attention_mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        eos_token_id=list(stop_ids),
        pad_token_id=pad_id,
    )
    # Sampling knobs of the checkpoint's generation_config would only produce warnings under greedy decoding.
    kwargs.update(temperature=None, top_p=None, top_k=None)
    with torch.inference_mode():
        if features is None:  # the model encodes each row's image itself
            rows = inputs.image_of_row
            mask = inputs.pixel_attention_mask
            return model.generate(
                pixel_values=inputs.pixel_values[rows],
                pixel_attention_mask=None if mask is None else mask[rows],
                **kwargs,
            )
        per_row = [features[u] for u in inputs.image_of_row]
        return model.generate(mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=per_row)}, **kwargs)


def generate_answers(
    loaded: LoadedModels,
    items: Sequence[EvalItem],
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    reuse_vision: bool = True,
    progress: bool = True,
    on_encode: Callable[[int], None] | None = None,
) -> tuple[dict[str, list[Generation | None]], dict[int, str]]:
    """Answers of every candidate for every item: ``({candidate: [Generation or None per item]}, skipped)``.

    ``skipped`` maps the index of each item whose image could not be opened to the reason (its entries are None).
    ``reuse_vision=False`` is the plain path (the processor and the vision encoder once per question), kept to
    check the fast path against and for models whose ``generate`` takes no pre-computed features.
    ``on_encode(n_images)`` is called after each vision encoding (for tests and benchmarks).
    """
    from tqdm.auto import tqdm

    if reuse_vision and not supports_feature_reuse(loaded.model):
        logger.warning("this transformers version cannot take pre-computed image features: one encoding per question")
        reuse_vision = False
    candidates = loaded.candidates
    results: dict[str, list[Generation | None]] = {c.name: [None] * len(items) for c in candidates}
    skipped: dict[int, str] = {}
    if not items:
        return results, skipped
    budgets = {
        c.name: max_new_tokens or answer_token_budget(c.processor.tokenizer, [it.answer for it in items])
        for c in candidates
    }
    groups: dict[str, list[Candidate]] = {}
    for c in candidates:
        groups.setdefault(_processor_key(c.processor), []).append(c)
    splice_ok: dict[str, bool] = {}

    bar = tqdm(total=len(items) * len(candidates), desc="answering", unit="answer", disable=not progress)
    for batch in make_batches(items, batch_size):
        images: dict[str, Any] = {}
        kept: list[int] = []
        for index in batch:
            key = items[index].image_key
            if key not in images:
                try:
                    images[key] = open_image(items[index].image)
                except UnreadableImageError as err:
                    images[key] = err
            if isinstance(images[key], UnreadableImageError):
                skipped[index] = str(images[key])
            else:
                kept.append(index)
        bar.update((len(batch) - len(kept)) * len(candidates))
        if not kept:
            continue
        distinct = list(dict.fromkeys(items[i].image_key for i in kept))
        image_of_row = [distinct.index(items[i].image_key) for i in kept]
        batch_images = [images[k] for k in distinct]
        questions = [items[i].question for i in kept]

        for group_key, group in groups.items():
            processor = group[0].processor
            tokenizer = processor.tokenizer
            stop_ids = stop_token_ids(tokenizer)
            if reuse_vision and group_key not in splice_ok:
                splice_ok[group_key] = splice_matches(processor, questions[0], batch_images[0])
                if not splice_ok[group_key]:
                    logger.warning("prompt splicing differs from the processor here: images processed per question")
            build = build_inputs_per_image if reuse_vision and splice_ok[group_key] else build_inputs_per_question
            inputs = build(processor, questions, batch_images, image_of_row).to(loaded.device)
            shared_features = None
            for candidate in group:
                with loaded.activate(candidate) as model:
                    features = None
                    if reuse_vision:
                        if candidate.touches_vision or shared_features is None:
                            features = encode_images(model, inputs)
                            if on_encode is not None:
                                on_encode(len(distinct))
                            if not candidate.touches_vision:
                                shared_features = features
                        else:
                            features = shared_features
                    elif on_encode is not None:
                        on_encode(len(kept))
                    out = _generate(model, inputs, features, budgets[candidate.name], stop_ids, tokenizer.pad_token_id)
                new_tokens = out[:, inputs.input_ids.shape[1] :].tolist()
                for row, index in enumerate(kept):
                    results[candidate.name][index] = decode_generation(tokenizer, new_tokens[row], stop_ids)
                bar.update(len(kept))
    bar.close()
    return results, skipped
