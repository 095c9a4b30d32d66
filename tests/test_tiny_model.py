"""The offline SmolVLM stand-in (`stk-vqa make-tiny-model`) loads and behaves like the real checkpoint."""

from __future__ import annotations

import pytest

QUESTION = "Is tux to the left or right of the ego car?"


def _messages(question: str, answer: str | None = None) -> list[dict]:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    return model, processor


def test_loads_with_auto_classes_as_idefics3(loaded):
    model, processor = loaded
    assert type(model).__name__ == "Idefics3ForConditionalGeneration"
    assert type(processor).__name__ == "Idefics3Processor"
    assert model.dtype.is_floating_point and str(model.dtype) == "torch.float32"
    assert processor.image_processor.do_image_splitting is False


def test_special_tokens_and_ids_agree_between_tokenizer_and_model(loaded):
    model, processor = loaded
    tok = processor.tokenizer
    names = ["<global-img>", "<fake_token_around_image>", "<image>", "<end_of_utterance>"]
    names += [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    ids = tok.convert_tokens_to_ids(names)
    assert tok.unk_token_id not in ids and len(set(ids)) == len(names)
    for name, token_id in zip(names, ids):  # each is one atomic token
        assert tok.encode(name, add_special_tokens=False) == [token_id]
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<image>")
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<end_of_utterance>")
    assert model.config.text_config.vocab_size >= len(tok)


def test_chat_template_renders_like_smolvlm(loaded):
    _, processor = loaded
    text = processor.apply_chat_template(_messages("What color is the image?", "red"))
    assert (
        text == "<|im_start|>User:<image>What color is the image?<end_of_utterance>\nAssistant: red<end_of_utterance>\n"
    )
    prompt = processor.apply_chat_template(_messages("What color is the image?"), add_generation_prompt=True)
    assert prompt.endswith("<end_of_utterance>\nAssistant:")


def test_trl_recognises_the_chat_template_for_assistant_only_loss(loaded):
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    _, processor = loaded
    training_template = get_training_chat_template(processor)
    assert training_template is not None and has_generation_markers(training_template)


def test_image_becomes_image_seq_len_tokens_and_forward_runs(loaded):
    import torch
    from PIL import Image

    model, processor = loaded
    vision = model.config.vision_config
    expected = (vision.image_size // vision.patch_size // model.config.scale_factor) ** 2
    assert processor.image_seq_len == expected == 4
    batch = processor.apply_chat_template(
        [_messages(QUESTION, "left")],
        images=[[Image.new("RGB", (150, 100), (10, 200, 30))]],  # course images are 150x100
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    assert batch["pixel_values"].shape[-2:] == (vision.image_size, vision.image_size)
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == expected
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()


def test_tokenizer_round_trips_any_text(loaded):
    _, processor = loaded
    tok = processor.tokenizer
    for text in [QUESTION, "sara_the_wizard front and left", "Zürich 42 ¿qué?"]:
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_same_seed_same_weights_other_seed_different():
    import torch

    from stk_vqa.tiny_model import build_model, build_tokenizer

    tok = build_tokenizer()
    a, b, c = (build_model(tok, seed=s) for s in (0, 0, 1))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_full_shape_is_smolvlm_256m():
    import torch
    from transformers import Idefics3ForConditionalGeneration

    from stk_vqa.tiny_model import build_config, build_tokenizer
    from stk_vqa.training.model_utils import image_seq_len

    config = build_config(build_tokenizer(), size="full")
    with torch.device("meta"):  # shape only, no 1 GB of random weights
        model = Idefics3ForConditionalGeneration(config)
    assert sum(p.numel() for p in model.parameters()) == 256_484_928
    assert config.text_config.vocab_size == 49280 and config.vision_config.image_size == 512
    assert image_seq_len(512, 16, 4) == 64 and image_seq_len(384, 16, 4) == 36


def test_bad_image_size_is_refused_before_building(tmp_path):
    from stk_vqa.tiny_model import make_tiny_model

    with pytest.raises(ValueError, match="image_size=100"):
        make_tiny_model(tmp_path / "m", image_size=100)
    with pytest.raises(ValueError, match="size"):
        make_tiny_model(tmp_path / "m", size="huge")
    assert not (tmp_path / "m").exists()


def test_cli_writes_a_loadable_folder_with_a_smaller_image_size(tmp_path):
    from transformers import AutoProcessor

    from stk_vqa.cli import main

    out = tmp_path / "tiny64"
    main(["make-tiny-model", str(out), "--image_size", "64", "--seed", "3"])
    processor = AutoProcessor.from_pretrained(out)
    assert processor.image_seq_len == 1
    assert processor.image_processor.max_image_size == {"longest_edge": 64}
    with pytest.raises(SystemExit, match=r"^error: .*tiny64 already exists"):
        main(["make-tiny-model", str(out)])  # the CLI reports it in one line
