"""``stk-vqa app``: its plain functions (no browser, no Gradio needed except for the one wiring test)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stk_vqa.app import logic
from stk_vqa.app.logic import AppError, ModelBank
from stk_vqa.data.info_file import load_frame
from stk_vqa.data.questions import generate_view_qa

SAMPLE = logic.BUNDLED_SAMPLE


def _info(karts, detections, track="lighthouse") -> dict:
    n = len(karts)
    return {"track": track, "karts": karts, "detections": detections, "distance_down_track": [0.0] * n,
            "velocity": [[0.0, 0.0, 0.0]] * n}  # fmt: skip


# ------------------------------------------------------------------------------------------------ config


def test_defaults_are_the_bundled_sample_and_the_quickstart_outputs_when_present(tmp_path):
    from stk_vqa.evaluation.models import DEFAULT_BASE_MODEL

    qs = tmp_path / "outputs" / "quickstart"
    config = logic.resolve_config(quickstart_dir=qs)
    assert config.data == str(SAMPLE) and (SAMPLE / "valid").is_dir()
    assert (config.model, config.adapters, config.report) == (DEFAULT_BASE_MODEL, [], None)

    (qs / "tiny-smolvlm").mkdir(parents=True)
    (qs / "tiny-smolvlm" / "config.json").write_text("{}")
    (qs / "adapter").mkdir()
    (qs / "adapter" / "adapter_config.json").write_text("{}")
    (qs / "report").mkdir()
    (qs / "report" / "results.json").write_text("{}")
    config = logic.resolve_config(quickstart_dir=qs)
    assert config.model == str(qs / "tiny-smolvlm")
    assert config.adapters == [f"smoke_adapter={qs / 'adapter'}"]
    assert config.report == str(qs / "report")
    # the user's own models win; Fire's comma-separated list is split
    config = logic.resolve_config(data="d", adapters="a=x,b=y", quickstart_dir=qs)
    assert (config.data, config.model, config.adapters) == ("d", None, ["a=x", "b=y"])


# ------------------------------------------------------------------------------------------------ frames


def test_bundled_sample_views_scene_facts_and_questions():
    source = logic.open_data(SAMPLE)
    assert source.kind == "frames" and source.splits() == ["train", "valid"]
    frames = {s: source.frames(s) for s in source.splits()}
    assert sum(len(f) for f in frames.values()) == 32  # the bundled sample's frames
    assert frames["train"][0].label == "00000 · lighthouse" and frames["train"][0].views == [0, 1, 2, 3, 4]

    view = source.view("train", "00000", 3)
    assert view.image.size == (150, 100) and view.scene.ego.name == "adiumy"
    boxes = logic.kart_boxes(view.scene)
    assert [b.name for b in boxes if b.kept] == [k.name for k in view.scene.karts]  # the scene's own rule
    dropped = {b.name: b.why for b in boxes if not b.kept}
    assert dropped == {"wilber": "too small: 5x3 px (< 5 px)"}
    facts = logic.scene_facts_markdown(view)
    for text in ("`lighthouse`", "**ego** adiumy", "| **adiumy** | 5 |", "back and left", "| wilber | 4 |"):
        assert text in facts

    expected = generate_view_qa(load_frame(SAMPLE / "train" / "00000_info.json"), 3, (150, 100))
    assert logic.qa_rows(view) == [[p.family, p.question, p.answer] for p in expected]
    assert len(logic.qa_rows(view, "all")) > len(expected)  # the extension families
    assert logic.reference_answer(view, "  what kart is the EGO car? ").answer == "adiumy"
    assert logic.reference_answer(view, "Is it raining?") is None
    assert ("[ego_kart] What kart is the ego car?", "What kart is the ego car?") in logic.question_choices(view)

    from stk_vqa.data.draw import EGO_COLOR, KART_COLOR

    picture = logic.annotated_image(view)
    assert picture.size == (600, 400)
    ego, other = view.scene.ego.box, next(k for k in view.scene.karts if k is not view.scene.ego).box
    # the left edge near the bottom corner (names are written at the top, over other boxes' edges)
    assert picture.getpixel((ego.x1 * 4, ego.y2 * 4 - 2)) == EGO_COLOR
    assert picture.getpixel((other.x1 * 4, other.y2 * 4 - 2)) == KART_COLOR
    small = next(b.box for b in boxes if b.name == "wilber")  # 5x3 px: drawn grey
    assert picture.getpixel((small.x1 * 4, small.y1 * 4 + 4)) == logic.DROPPED_COLOR


def test_upload_bad_input_gives_messages_not_tracebacks(tmp_path):

    with pytest.raises(AppError, match="upload an image"):
        logic.view_from_upload(None, None)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(AppError, match="'notes.txt' is not an image"):
        logic.view_from_upload(str(text), None)
    broken = tmp_path / "00000_info.json"
    broken.write_text('{"track": "lighthouse", "karts": [')
    with pytest.raises(AppError, match="00000_info.json: field '<json>': malformed JSON"):
        logic.view_from_upload(None, str(broken))
    broken.write_text(json.dumps(_info(["tux"], [[[1, 99, 0, 0, 10, 10]]])))
    with pytest.raises(AppError, match=r"detections\[0\]\[0\]\[1\] \(instance_id\).*kart id 99 out of range"):
        logic.view_from_upload(None, str(broken))
    broken.write_text(json.dumps(_info(["tux"], [[]])))
    with pytest.raises(AppError, match="view 3 out of range"):
        logic.view_from_upload(None, str(broken), 3)


def test_upload_of_a_600x400_image_with_its_info(tmp_path):
    from PIL import Image

    info = tmp_path / "0000a_info.json"
    # tux in the middle, konqi left-front, gnu outside the image, wilber too small
    info.write_text(json.dumps(_info(["tux", "konqi", "gnu", "wilber"], [[
        [1, 0, 280, 180, 320, 220], [1, 1, 40, 40, 100, 100], [1, 2, 700, 10, 760, 60], [1, 3, 500, 300, 503, 302],
        [4, 0, 10, 300, 30, 320]]], track="zengarden")))  # fmt: skip
    big = tmp_path / "big.png"
    Image.new("RGB", (600, 400), (10, 120, 10)).save(big)
    view = logic.view_from_upload(str(big), str(info), 0)
    assert view.scene.image_size == (600, 400) and view.notes == ()
    assert view.scene.ego.name == "tux" and view.scene.karts[1].box.x1 == 40  # label space = image space
    why = {b.name: b.why for b in logic.kart_boxes(view.scene)}
    assert why == {"tux": "EGO", "konqi": "front and left", "gnu": "outside the 600x400 image",
                   "wilber": "too small: 3x2 px (< 5 px)"}  # fmt: skip
    assert logic.annotated_image(view).size == (600, 400)
    assert ["relative_position", "Where is konqi relative to the ego car?", "front and left"] in logic.qa_rows(view)
    assert "pickup x1" in logic.scene_facts_markdown(view)

    odd = tmp_path / "odd.png"
    Image.new("RGB", (300, 300)).save(odd)
    assert "300x300" in logic.view_from_upload(str(odd), str(info)).notes[0]
    only_image = logic.view_from_upload(str(big), None)
    assert only_image.scene is None and logic.qa_rows(only_image) == []
    assert logic.annotated_image(only_image).size == (600, 400)
    only_info = logic.view_from_upload(None, str(info))
    assert only_info.image is None and only_info.scene.image_size == (150, 100)
    with pytest.raises(AppError, match="no image"):
        logic.image_bytes(only_info)


def test_data_sources_errors(tmp_path):
    with pytest.raises(AppError, match="could not be loaded"):
        logic.open_data(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(AppError, match="a file"):
        logic.open_data(tmp_path / "file.txt")
    bad = tmp_path / "frames" / "valid"
    bad.mkdir(parents=True)
    (bad / "00000_info.json").write_text("{")
    source = logic.open_data(tmp_path / "frames")
    assert source.frames("valid")[0].label == "00000 (bad info.json)"
    with pytest.raises(AppError, match="malformed JSON"):
        source.view("valid", "00000", 0)
    with pytest.raises(AppError, match="no split 'test'"):
        source.frames("test")


def test_a_datasetdict_shows_its_rows(color_chat_dataset_dir):
    source = logic.open_data(color_chat_dataset_dir)
    assert source.kind == "dataset" and source.splits() == ["train", "validation"]
    frames = source.frames("validation")
    assert [f.key for f in frames] == ["00008", "00009", "0000a", "0000b"] and frames[0].label == "00008 · synthetic"
    view = source.view("validation", "00008", 0)
    assert view.scene is None and view.image.size == (64, 64)
    assert logic.qa_rows(view) == [["color", "What color is the image?", "red"]]
    assert logic.reference_answer(view, "What color is the image?").answer == "red"
    assert source.rows("validation")[1] == [1, "00009", 0, "synthetic", "color", "What color is the image?", "green"]


# ------------------------------------------------------------------------------------------------ models


@pytest.fixture(scope="module")
def color_view(color_chat_dataset_dir):
    return logic.open_data(color_chat_dataset_dir).view("train", "00001", 0)  # a green image


def test_base_and_adapter_answer_side_by_side_and_are_loaded_once(
    tiny_model_dir, trained_color_adapter_dir, color_view
):
    bank = ModelBank(str(tiny_model_dir), [f"colors={trained_color_adapter_dir}"], device="cpu")
    assert bank.loaded is None and "loaded on the first question" in bank.describe_markdown()
    result = logic.ask(bank, color_view, "What color is the image?")
    assert result.reference.answer == "green"
    assert [row[0] for row in result.rows] == ["base", "colors"]
    assert result.rows[1][1:] == ["green", "✓ right"]
    assert result.rows[0][2] == "✗ wrong"  # random weights
    loaded = bank.loaded
    free = logic.ask(bank, color_view, "Anything to say?")
    assert bank.loaded is loaded  # cached, not reloaded
    assert free.reference is None and [r[2] for r in free.rows] == ["", ""]
    md = logic.ask_markdown(result)
    assert "**reference answer:** `green`" in md and "| colors | green | ✓ right |" in md

    run = logic.run_family(bank, color_view, "all")
    assert run.summary == [["base", "0/1", "0/1"], ["colors", "1/1", "1/1"]]
    assert run.rows[0][:4] == ["color", "What color is the image?", "green", run.rows[0][3]]
    assert run.rows[0][4] == "✓ green"
    assert "**colors** 1/1 exact (1/1 by the course's rule)" in logic.family_run_markdown(run)
    one = logic.run_family(bank, color_view, "color")
    assert one.header == ["question", "reference", "base", "colors"] and one.rows[0][3] == "✓ green"
    # a model's answer is free text: it stays in its table cell
    assert logic._md("a\nb | <json>") == "a b \\| &lt;json&gt;"
    with pytest.raises(AppError, match="no question of family 'track'"):
        logic.run_family(bank, color_view, "track")
    with pytest.raises(AppError, match="type a question"):
        logic.ask(bank, color_view, "  ")


def test_unusable_adapters_are_left_out_with_a_message(tmp_path, tiny_model_dir, trained_color_adapter_dir, color_view):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Idefics3ForConditionalGeneration

    from stk_vqa.tiny_model import build_config, build_tokenizer

    other_base = tmp_path / "other-base-lora"
    shutil.copytree(trained_color_adapter_dir, other_base)
    config = json.loads((other_base / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "HuggingFaceTB/SmolVLM-256M-Instruct"
    (other_base / "adapter_config.json").write_text(json.dumps(config))
    # weights for a narrower text model, though it names this base: only loading finds out
    narrow_config = build_config(build_tokenizer(), "tiny")
    narrow_config.text_config.hidden_size = 32
    torch.manual_seed(0)
    narrow = tmp_path / "narrow-lora"
    get_peft_model(Idefics3ForConditionalGeneration(narrow_config),
                   LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(narrow)  # fmt: skip
    config = json.loads((narrow / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tiny_model_dir)
    (narrow / "adapter_config.json").write_text(json.dumps(config))

    bank = ModelBank(str(tiny_model_dir), [f"other={other_base}", f"gone={tmp_path / 'gone'}", f"narrow={narrow}",
                                           f"colors={trained_color_adapter_dir}"], device="cpu")  # fmt: skip
    result = logic.ask(bank, color_view, "What color is the image?")
    assert [row[0] for row in result.rows] == ["base", "colors"]
    assert result.rows[1][1] == "green"
    problems = " ".join(result.problems)
    assert "was trained on base model 'HuggingFaceTB/SmolVLM-256M-Instruct'" in problems
    assert "gone' does not exist" in problems
    assert "narrow-lora does not fit base model" in problems
    assert "⚠️ adapter left out" in logic.ask_markdown(result)


def test_a_model_that_cannot_be_fetched_offline_gives_a_message(monkeypatch, color_view):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bank = ModelBank("some-org/some-model", [], device="cpu")
    with pytest.raises(AppError, match="could not be loaded.*some-org/some-model.*HF_HUB_OFFLINE"):
        logic.ask(bank, color_view, "What color is the image?")
    assert bank.loaded is None  # a later question tries again
    assert logic.safe_message(AppError("x")) == "⚠️ x"
    assert logic.safe_message(KeyError("k")).startswith("⚠️ unexpected error: KeyError")


# ------------------------------------------------------------------------------------------------ report


def test_open_report_reads_an_evaluation_folder(tmp_path, color_chat_dataset_dir):
    from stk_vqa.evaluation.items import load_items
    from stk_vqa.evaluation.report import build_results, write_report

    items = load_items(color_chat_dataset_dir, split="validation")
    answers = {
        "base": {"kind": "base", "source": "m", "texts": ["blue"] * 4, "finished": [True] * 4},
        "lora": {"kind": "adapter", "source": "a", "texts": [i.answer for i in items], "finished": [True] * 4},
    }
    results, records = build_results(items, answers, {}, {"title": "A title", "data": "d"})
    write_report(tmp_path / "rep", results, records)
    report = logic.open_report(str(tmp_path / "rep"))
    assert report.title == "A title" and report.header == ["family", "n", "base", "lora"]
    assert report.rows == [["color", "4", "25.0% (25.0%)", "100.0% (100.0%)"],
                           ["overall", "4", "25.0% (25.0%)", "100.0% (100.0%)"]]  # fmt: skip
    assert report.chart.endswith("accuracy_by_family.png") and Path(report.chart).is_file()
    assert "## Overall" in report.markdown and "accuracy_by_family.png" not in report.markdown

    with pytest.raises(AppError, match="give an evaluation folder"):
        logic.open_report("")
    with pytest.raises(AppError, match="no such folder"):
        logic.open_report(str(tmp_path / "nope"))
    with pytest.raises(AppError, match="no results.json"):
        logic.open_report(str(tmp_path))
    (tmp_path / "rep" / "results.json").write_text('{"models": 3}')
    with pytest.raises(AppError, match="not a results file"):
        logic.open_report(str(tmp_path / "rep"))


# ------------------------------------------------------------------------------------------------ wiring


def test_the_logic_and_the_command_need_no_gradio():
    code = (
        "import sys; sys.modules['gradio'] = None\n"  # as if Gradio were not installed
        "import stk_vqa.app.logic, stk_vqa.app.ui\n"
        "from stk_vqa.cli import main, COMMANDS\n"
        "main(['--help'])\n"
        "assert COMMANDS['app'].function == 'stk_vqa.app.ui:app'\n"
        "try:\n    main(['app'])\nexcept SystemExit as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "app  " in out.stdout and "pip install -e '.[app]'" in out.stdout


def test_the_page_builds(tiny_model_dir, color_chat_dataset_dir):
    gr = pytest.importorskip("gradio")
    from stk_vqa.app.ui import build_app

    config = logic.AppConfig(data=str(color_chat_dataset_dir), model=str(tiny_model_dir), adapters=[], report=None)
    demo = build_app(config, device="cpu")
    assert isinstance(demo, gr.Blocks) and demo.stk_bank.loaded is None  # models wait for the first question
    demo = build_app(logic.AppConfig(data=str(SAMPLE), model="x/y", adapters=[], report=None))
    assert isinstance(demo, gr.Blocks)
