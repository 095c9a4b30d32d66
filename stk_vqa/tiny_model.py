"""Offline stand-ins for SmolVLM-256M-Instruct: same architecture (Idefics3), built locally.

The Hugging Face Hub is not always reachable (CI, air-gapped machines), and a CPU-only user wants a smoke run
that finishes in seconds. :func:`make_tiny_model` writes a folder that loads exactly like the real checkpoint::

    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)

so every recipe can point ``model_name_or_path`` at it. Three shapes:

* ``size="tiny"``: about 0.6M parameters, 128x128 images -> 4 image tokens; for tests and smoke runs.
* ``size="small"``: 4.3M parameters, 192x192 images -> 36 image tokens; trained from scratch (vision tower
  included) by the learn-to-see benchmark.
* ``size="full"``: SmolVLM-256M-Instruct's exact shape (256.5M parameters, 512x512 images -> 64 image tokens)
  with random weights; for speed and memory benchmarks.

The tokenizer is a byte-level BPE trained in a few milliseconds on an in-code corpus of the project's question and
answer vocabulary, plus SmolVLM's special tokens (``<global-img>``, ``<row_i_col_j>``,
``<fake_token_around_image>``, ``<image>``, ``<end_of_utterance>``) and SmolVLM's own chat template, so prompts,
image-token expansion and TRL's assistant-only loss masking behave as with the real model. Being byte-level, it
encodes and decodes any text losslessly, it is just less compact than SmolLM2's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# SmolVLM-256M-Instruct's chat template, byte for byte (TRL recognises it and swaps in its training variant with
# {% generation %} markers when `assistant_only_loss=True`).
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# SmolLM2's first special tokens (ids 0, 1, 2 there and here).
BASE_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# The image tokens SmolVLM adds to SmolLM2's vocabulary (ids 49152..49190 there), then its end-of-turn token.
IMAGE_SPECIAL_TOKENS = (
    ["<global-img>"]
    + [f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)]
    + ["<fake_token_around_image>", "<image>"]
)
END_OF_UTTERANCE = "<end_of_utterance>"

# Words the project's questions and answers use (SuperTuxKart karts and tracks, directions, counts), and a few
# generic ones, so that the tiny tokenizer learns sensible merges. Any other text still encodes (byte-level BPE).
_KARTS = [
    "adiumy", "amanda", "beastie", "emule", "gavroche", "gnu", "hexley", "kiki", "konqi", "nolok", "pidgin",
    "puffy", "sara_the_racer", "sara_the_wizard", "suzanne", "tux", "wilber", "xue",
]  # fmt: skip
_TRACKS = [
    "abyss", "black_forest", "cocoa_temple", "cornfield_crossing", "fortmagma", "gran_paradiso_island", "hacienda",
    "lighthouse", "mines", "minigolf", "olivermath", "ravenbridge_mansion", "sandtrack", "scotland", "snowmountain",
    "snowtuxpeak", "stk_enterprise", "volcano_island", "xr591", "zengarden",
]  # fmt: skip
_PHRASES = [
    "What kart is the ego car?",
    "How many karts are there in the scenario?",
    "What track is this?",
    "Is {kart} to the left or right of the ego car?",
    "Is {kart} in front of or behind the ego car?",
    "Where is {kart} relative to the ego car?",
    "How many karts are to the left of the ego car?",
    "How many karts are to the right of the ego car?",
    "How many karts are in front of the ego car?",
    "How many karts are behind the ego car?",
    "Which kart is closest to the ego car?",
    "Which kart is leading the race?",
    "What color is the image?",
    "Is the ego car moving faster than {kart}?",
    "left right front back behind ahead yes no none unknown front and left front and right back and left "
    "back and right red green blue yellow white black orange purple",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 100 0.5 1.0",
    "The quick brown fox jumps over the lazy dog. A kart, a track, a race; the image shows the scene.",
    "User: Assistant: System: You are a helpful assistant.",
    "Assistant: Assistant: Assistant: User: User:",
]


def tokenizer_corpus() -> list[str]:
    """The in-code text the tiny tokenizer's BPE merges are learnt from (deterministic)."""
    lines = []
    for phrase in _PHRASES:
        if "{kart}" in phrase:
            lines += [phrase.format(kart=kart) for kart in _KARTS]
        else:
            lines.append(phrase)
    lines += [f"The track is {track}." for track in _TRACKS]
    lines += [f"{kart} {kart}" for kart in _KARTS]
    return lines


def build_tokenizer(vocab_size: int = 1024):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with SmolVLM's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AddedToken, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=BASE_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    # SmolVLM's order: the image tokens, then <end_of_utterance> last.
    backend.add_special_tokens(IMAGE_SPECIAL_TOKENS + [END_OF_UTTERANCE])

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token=END_OF_UTTERANCE,
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        model_max_length=8192,
        clean_up_tokenization_spaces=False,
    )
    special = [AddedToken(token, normalized=False, special=True) for token in IMAGE_SPECIAL_TOKENS + [END_OF_UTTERANCE]]
    tokenizer.add_special_tokens({"additional_special_tokens": special})  # marks them special (ids unchanged)
    tokenizer.chat_template = SMOLVLM_CHAT_TEMPLATE
    return tokenizer


# name -> (text config, vision config, scale_factor). Text: a Llama decoder (SmolLM2); vision: SigLIP.
SHAPES: dict[str, tuple[dict, dict, int]] = {
    "tiny": (
        # initializer_range 0.1, not 0.02: the frozen lm_head's rows must be long enough that LoRA can make the
        # right token much likelier than the others; at 0.02 a smoke run's loss stalls near 4 nats.
        dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, initializer_range=0.1),
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=128, patch_size=16),
        4,
    ),
    "small": (
        # Trained from scratch, vision tower included, by the learn-to-see benchmark (benchmarks/learn_to_see.py):
        # 4.3M parameters, 192 px images -> 12x12 patches -> 36 image tokens (scale factor 2).
        dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, initializer_range=0.02),
        dict(hidden_size=192, intermediate_size=384, num_hidden_layers=4, num_attention_heads=3, image_size=192, patch_size=16),
        2,
    ),
    "full": (  # HuggingFaceTB/SmolVLM-256M-Instruct
        dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, vocab_size=49280),
        dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=512, patch_size=16),
        4,
    ),
}  # fmt: skip


def build_processor(tokenizer, image_size: int, patch_size: int, scale_factor: int):
    """An ``Idefics3Processor`` resizing every image to one ``image_size`` square (``do_image_splitting=False``)."""
    from transformers import Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    from stk_vqa.training.model_utils import image_seq_len

    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": image_size},
        max_image_size={"longest_edge": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len(image_size, patch_size, scale_factor),
        chat_template=SMOLVLM_CHAT_TEMPLATE,
    )


def build_config(tokenizer, size: str = "tiny"):
    """The ``Idefics3Config`` of shape ``size``, with the tokenizer's special-token ids."""
    from transformers import Idefics3Config

    if size not in SHAPES:
        raise ValueError(f"size={size!r}: expected one of {sorted(SHAPES)}")
    text, vision, scale_factor = SHAPES[size]
    ids = special_token_ids(tokenizer)
    vocab_size = text.get("vocab_size") or -(-len(tokenizer) // 64) * 64  # room for every token, multiple of 64
    if vocab_size < len(tokenizer):
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, more than the {size} shape's vocab_size={vocab_size}")
    text_config = dict(
        text,
        model_type="llama",
        vocab_size=vocab_size,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
    )
    return Idefics3Config(
        text_config=text_config,
        vision_config=dict(vision),
        scale_factor=scale_factor,
        image_token_id=ids["image"],
        tie_word_embeddings=False,
        pad_token_id=ids["pad"],
    )


def special_token_ids(tokenizer) -> dict[str, int]:
    """``bos`` / ``eos`` (end of utterance) / ``pad`` / ``image`` token ids of a SmolVLM-style tokenizer."""
    names = {"bos": "<|im_start|>", "eos": END_OF_UTTERANCE, "pad": "<|im_end|>", "image": "<image>"}
    return {name: tokenizer.convert_tokens_to_ids(token) for name, token in names.items()}


def build_model(tokenizer, size: str = "tiny", seed: int = 0):
    """A randomly initialised ``Idefics3ForConditionalGeneration`` of shape ``size`` (fp32), reproducible from ``seed``."""
    import torch
    from transformers import GenerationConfig, Idefics3ForConditionalGeneration

    config = build_config(tokenizer, size)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).float().eval()
    ids = special_token_ids(tokenizer)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"]
    )
    return model


@dataclass
class TinyModelConfig:
    """Save an offline SmolVLM-architecture model + processor to OUT_DIR (loads with ``from_pretrained``)."""

    out_dir: str = field(default="tiny-smolvlm", metadata={"help": "Folder to write (config, weights, processor)."})
    size: str = field(
        default="tiny",
        metadata={
            "help": "tiny (tests, smoke runs; 128px -> 4 image tokens), small (4.3M, 192px -> 36 tokens, trained from "
            "scratch by the learn-to-see benchmark) or full (SmolVLM-256M's shape, random weights)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the random weights; the same seed gives the same files."})
    image_size: int | None = field(
        default=None,
        metadata={"help": "Processor image side in pixels (default: the shape's own); a multiple of patch_size * 4."},
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace OUT_DIR if it exists."})


def make_tiny_model(
    out_dir: str = "tiny-smolvlm",
    size: str = "tiny",
    seed: int = 0,
    image_size: int | None = None,
    overwrite: bool = False,
) -> str:
    """Save an offline SmolVLM-architecture model + processor to OUT_DIR (loads with ``from_pretrained``).

    Args:
        out_dir: folder to write (``config.json``, ``model.safetensors``, tokenizer and processor files).
        size: ``tiny`` (smoke runs and tests, 128px images -> 4 image tokens) or ``full`` (SmolVLM-256M's shape,
            256.5M random parameters, 512px images -> 64 image tokens; for benchmarks).
        seed: seed of the random weights; the same seed gives the same files.
        image_size: processor image side in pixels (default: the shape's own); a multiple of patch_size * 4.
        overwrite: replace OUT_DIR if it exists.

    Returns:
        The folder written.
    """
    from stk_vqa.fileio import atomic_directory, guard_output_dir
    from stk_vqa.training.model_utils import image_seq_len

    if size not in SHAPES:
        raise ValueError(f"--size {size!r}: expected one of {sorted(SHAPES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"--seed {seed!r}: expected an integer from 0 to 2**32 - 1")
    _, vision, scale_factor = SHAPES[size]
    image_size = int(vision["image_size"] if image_size is None else image_size)
    if not 1 <= image_size <= 4096:
        raise ValueError(f"--image_size {image_size}: expected 1 to 4096 pixels")
    image_seq_len(image_size, vision["patch_size"], scale_factor)  # validates before the slow part
    guard_output_dir(out_dir, overwrite=overwrite, what="out_dir")

    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer, image_size, vision["patch_size"], scale_factor)
    model = build_model(processor.tokenizer, size=size, seed=seed)
    with atomic_directory(out_dir, overwrite=overwrite, command="make-tiny-model") as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return os.fspath(Path(out_dir))


__all__ = ["make_tiny_model", "build_tokenizer", "build_processor", "build_config", "build_model", "SHAPES"]
