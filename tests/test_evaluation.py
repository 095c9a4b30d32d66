"""Evaluation end to end on the tiny offline SmolVLM stand-in: adapters, reports, errors, ``ask``, ``test``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stk_vqa.evaluation.cli import ask, run_evaluation
from stk_vqa.evaluation.configs import AskConfig, EvalConfig
from stk_vqa.evaluation.inference import generate_answers, supports_feature_reuse
from stk_vqa.evaluation.items import DataSourceError, load_items
from stk_vqa.evaluation.models import ModelSourceError, load_models


def _random_adapter(base_dir: Path, out: Path, target_modules, seed: int = 0) -> Path:
    """An untrained adapter with non-zero random LoRA weights (so that it changes the model's answers)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(base_dir)
    config = LoraConfig(r=4, target_modules=target_modules, init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def random_adapter_dir(tmp_path_factory, tiny_model_dir) -> Path:
    return _random_adapter(tiny_model_dir, tmp_path_factory.mktemp("random") / "noise-lora", ["q_proj", "v_proj"])


def test_trained_adapter_scores_100_and_is_compared_side_by_side(
    tmp_path, tiny_model_dir, color_chat_dataset_dir, trained_color_adapter_dir, random_adapter_dir
):
    out = tmp_path / "report"
    results = run_evaluation(EvalConfig(
        data=str(color_chat_dataset_dir), model=str(tiny_model_dir), split="train", out_dir=str(out),
        adapters=[str(trained_color_adapter_dir), f"noise={random_adapter_dir}"], with_base=True, batch_size=3,
        progress=False,
    ))  # fmt: skip
    models = results["models"]
    assert list(models) == ["blind_prior", "base", "color-lora", "noise"]
    assert [m["kind"] for m in models.values()] == ["prior", "base", "adapter", "adapter"]
    assert models["color-lora"]["overall"]["exact_accuracy"] == 1.0
    assert models["color-lora"]["overall"]["reference_accuracy"] == 1.0
    assert models["color-lora"]["n_unfinished"] == 0
    assert models["base"]["overall"]["exact_accuracy"] < 1.0  # untrained: garbage, counted wrong
    assert models["noise"]["overall"]["exact_accuracy"] < 1.0
    assert models["blind_prior"]["overall"]["exact_accuracy"] == pytest.approx(0.25)  # 4 colours, 2 rows each
    assert models["color-lora"]["families"]["color"]["confusion"]["matrix"] == [
        [2, 0, 0, 0, 0], [0, 2, 0, 0, 0], [0, 0, 2, 0, 0], [0, 0, 0, 2, 0]
    ]  # fmt: skip

    # the files on disk say the same, side by side on the same items
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["models"]["color-lora"]["overall"] == models["color-lora"]["overall"]
    assert on_disk["config"]["model"] == str(tiny_model_dir)
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 8
    for record in records:
        assert set(record["predictions"]) == {"blind_prior", "base", "color-lora", "noise"}
        assert record["predictions"]["color-lora"]["text"] == record["answer"]
    md = (out / "report.md").read_text()
    assert "| color-lora | 8 | 100.0% | 100.0% |" in md
    assert (out / "accuracy_by_family.png").stat().st_size > 1000


def test_vision_features_are_reused_and_change_nothing(tiny_model_dir, color_chat_dataset_dir, tmp_path):
    """Encoding each image once gives the same answers as encoding it per question, with fewer encodings."""
    vision_adapter = _random_adapter(tiny_model_dir, tmp_path / "vision-lora", ["q_proj", "v_proj", "fc1"], seed=1)
    text_adapter = _random_adapter(tiny_model_dir, tmp_path / "text-lora", r".*\.text_model\..*\.(q_proj|v_proj)")
    loaded = load_models(str(tiny_model_dir), [str(text_adapter), str(vision_adapter)], with_base=True)
    assert supports_feature_reuse(loaded.model)
    assert [c.touches_vision for c in loaded.candidates] == [False, False, True]

    base_items = load_items(color_chat_dataset_dir, split="train")
    # three questions per image, asked of 8 distinct images
    items = [item for item in base_items for _ in range(3)]
    reused, per_question = [], []
    with_reuse, _ = generate_answers(loaded, items, batch_size=6, on_encode=reused.append, progress=False)
    without, _ = generate_answers(loaded, items, batch_size=6, reuse_vision=False, on_encode=per_question.append,
                                  progress=False)  # fmt: skip
    assert with_reuse == without
    assert len({g.text for g in with_reuse["base"]} | {g.text for g in with_reuse["vision-lora"]}) > 1
    assert sum(per_question) == 3 * len(items)  # every candidate encodes every question's image
    # base and the text-only adapter share one encoding per image; the vision adapter needs its own
    assert sum(reused) == 2 * len(base_items)


@pytest.mark.parametrize("image_size", [128, 512])
def test_prompts_spliced_per_image_equal_the_processors_own(image_size):
    """Processing each image once and splicing its questions' tokens after it gives the processor's exact inputs."""
    import torch
    from PIL import Image

    from stk_vqa.evaluation.inference import build_inputs_per_image, build_inputs_per_question, splice_matches
    from stk_vqa.tiny_model import build_processor, build_tokenizer

    processor = build_processor(build_tokenizer(), image_size, 16, 4)
    processor.tokenizer.padding_side = "left"
    images = [Image.new("RGB", (150, 100), (200, 40, 10)), Image.new("RGB", (90, 120), (0, 90, 250))]
    questions = [
        "What kart is the ego car?",
        "Where is sara_the_wizard relative to the ego car?",
        "What track is this?",
    ]
    image_of_row = [0, 1, 0]
    spliced = build_inputs_per_image(processor, questions, images, image_of_row)
    whole = build_inputs_per_question(processor, questions, images, image_of_row)
    assert torch.equal(spliced.input_ids, whole.input_ids)
    assert torch.equal(spliced.attention_mask, whole.attention_mask)
    assert spliced.pixel_values.shape[0] == 2  # each distinct image processed once
    assert torch.equal(spliced.pixel_values, whole.pixel_values)
    assert splice_matches(processor, questions[1], images[1])


def test_unreadable_images_are_skipped_and_counted(tmp_path, tiny_model_dir, trained_color_adapter_dir):
    from PIL import Image

    from stk_vqa.cli import main

    data = tmp_path / "data"
    (data / "valid").mkdir(parents=True)
    (data / "valid_grader").mkdir()
    records = []
    for i, (colour, rgb) in enumerate([("red", (220, 30, 30)), ("blue", (30, 30, 220))]):
        Image.new("RGB", (64, 64), rgb).save(data / "valid" / f"{i:05x}_00_im.jpg")
        records.append(
            {"image_file": f"valid/{i:05x}_00_im.jpg", "question": "What color is the image?", "answer": colour}
        )
    (data / "valid" / "00002_00_im.jpg").write_bytes(b"\xff\xd8 truncated")
    records.append({"image_file": "valid/00002_00_im.jpg", "question": "What color is the image?", "answer": "red"})
    records.append({"image_file": "valid/00003_00_im.jpg", "question": "What color is the image?", "answer": "blue"})
    qa_json = data / "valid_grader" / "balanced_qa_pairs.json"
    qa_json.write_text(json.dumps(records))

    # the original project's alias, through the real command line: stk-vqa test CHECKPOINT
    main(["test", str(trained_color_adapter_dir), "--data", str(qa_json), "--out_dir", str(tmp_path / "rep")])
    results = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert results["data"]["n_items"] == 4
    assert results["data"]["n_skipped"] == 2 and results["data"]["n_skipped_images"] == 2
    assert results["data"]["n_evaluated"] == 2
    assert "blind_prior" not in results["models"]  # legacy json has no training split
    assert results["models"]["color-lora"]["overall"]["exact_accuracy"] == 1.0  # JPEG colours, still right
    assert "00002_00_im.jpg" in (tmp_path / "rep" / "report.md").read_text()


def test_ask_answers_one_question(tmp_path, tiny_model_dir, trained_color_adapter_dir):
    from PIL import Image

    image = tmp_path / "green.png"
    Image.new("RGB", (64, 64), (30, 200, 30)).save(image)
    assert (
        ask(AskConfig(image=str(image), question="What color is the image?", adapter=str(trained_color_adapter_dir)))
        == "green"
    )
    answer = ask(
        AskConfig(image=str(image), question="What color is the image?", model=str(tiny_model_dir), max_new_tokens=3)
    )
    assert isinstance(answer, str) and answer != "green"
    with pytest.raises(ValueError, match="absent.png"):
        ask(
            AskConfig(
                image=str(tmp_path / "absent.png"), question="What color is the image?", model=str(tiny_model_dir)
            )
        )


# ------------------------------------------------------------------------------------------ bad input


def test_missing_or_wrong_adapter_folders_fail_clearly(tmp_path, tiny_model_dir, trained_color_adapter_dir):
    with pytest.raises(ModelSourceError, match="adapter folder .*nope.* does not exist"):
        load_models(str(tiny_model_dir), [str(tmp_path / "nope")])
    with pytest.raises(ModelSourceError, match="is a full model"):
        load_models(str(tiny_model_dir), [str(tiny_model_dir)])
    run = tmp_path / "run"
    shutil.copytree(trained_color_adapter_dir, run / "checkpoint-30")
    with pytest.raises(ModelSourceError, match="checkpoint-30"):
        load_models(str(tiny_model_dir), [str(run)])


def test_adapter_of_another_base_model_fails_clearly(tmp_path, tiny_model_dir, trained_color_adapter_dir):
    from stk_vqa.tiny_model import make_tiny_model

    other = Path(make_tiny_model(tmp_path / "other-base", seed=1))
    with pytest.raises(ModelSourceError, match="was trained on base model .*base_model_name_or_path"):
        load_models(str(other), [str(trained_color_adapter_dir)])
    loaded = load_models(str(other), [str(trained_color_adapter_dir)], with_base=False, allow_base_mismatch=True)
    assert [c.name for c in loaded.candidates] == ["color-lora"]

    # weights that cannot fit: an adapter made for a narrower text model, even when it names this base
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Idefics3ForConditionalGeneration

    from stk_vqa.tiny_model import build_config, build_tokenizer

    config = build_config(build_tokenizer(), "tiny")
    config.text_config.hidden_size = 32
    torch.manual_seed(0)
    narrow = Idefics3ForConditionalGeneration(config)
    narrow_adapter = tmp_path / "narrow-lora"
    get_peft_model(narrow, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(
        narrow_adapter
    )
    adapter_config = json.loads((narrow_adapter / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = str(tiny_model_dir)
    (narrow_adapter / "adapter_config.json").write_text(json.dumps(adapter_config))
    with pytest.raises(ModelSourceError, match="does not fit base model"):
        load_models(str(tiny_model_dir), [str(narrow_adapter)])


def test_hub_ids_that_cannot_be_reached_offline_fail_clearly(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError, match="some-org/some-adapter.*Hugging Face Hub.*HF_HUB_OFFLINE"):
        load_models(str(tiny_model_dir), ["some-org/some-adapter"])
    with pytest.raises(ModelSourceError, match="base model 'some-org/some-model'.*Hub"):
        load_models("some-org/some-model", [])
    with pytest.raises(DataSourceError, match="some-org/some-dataset.*Hub"):
        load_items("some-org/some-dataset", split="validation")


def test_cli_reports_bad_input_in_one_line(tmp_path, tiny_model_dir, color_chat_dataset_dir):
    from stk_vqa.cli import main

    with pytest.raises(SystemExit, match="error: .*nope.* does not exist"):
        main(["evaluate", "--data", str(color_chat_dataset_dir), "--model", str(tiny_model_dir),
              "--adapters", str(tmp_path / "nope"), "--out_dir", str(tmp_path / "r")])  # fmt: skip
    with pytest.raises(SystemExit, match="--data is required"):
        main(["evaluate", "--model", str(tiny_model_dir)])
    assert not (tmp_path / "r").exists()
