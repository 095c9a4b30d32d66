"""Evaluation without a model: metrics, blind prior, templates, data loading, batching, report files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stk_vqa.evaluation.baselines import BlindPrior
from stk_vqa.evaluation.items import (
    DataSourceError,
    EvalItem,
    UnreadableImageError,
    load_items,
    match_template,
    open_image,
    training_qa,
)
from stk_vqa.evaluation.metrics import (
    OTHER_LABEL,
    exact_correct,
    majority,
    normalize_answer,
    parse_count,
    reference_correct,
    score_one,
    summarize,
)

# ------------------------------------------------------------------------------------------ metrics


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("left", "left", True),
        ("Left", "left", True),
        ("  right \n", "right", True),
        ("10", "1", True),  # quirk: only the first len(gold) characters are compared
        ("1", "10", False),
        ("front and right", "front", True),  # quirk: a longer answer that starts with the gold passes
        ("front", "front and right", False),
        ("fro", "front", False),
        ("left", "left ", True),  # len() counts the gold's unstripped characters
        ("lefty", "left ", False),  # ... so one more predicted character is compared against nothing: "lefty" != "left"
        ("red.", "red", True),
        ("", "1", False),
        ("", "", True),
        ("kiki", "konqi", False),
    ],
)
def test_reference_rule_is_the_course_prefix_rule(pred, gold, expected):
    assert reference_correct(pred, gold) is expected
    # the rule, literally, as the course benchmark writes it
    assert (pred.strip().lower()[: len(gold)] == gold.strip().lower()[: len(gold)]) is expected


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("front and left", "front and left", True),
        ("Front  and\tLeft.", "front and left", True),
        (" 3 ", "3", True),
        ("3!", "3", True),
        ("10", "1", False),
        ("front and right", "front", False),
        ("front", "front and left", False),
        ("", "1", False),
        ("sara_the_racer", "sara_the_racer", True),
        ("sara the racer", "sara_the_racer", False),
    ],
)
def test_exact_match_is_normalised_equality(pred, gold, expected):
    assert exact_correct(pred, gold) is expected


def test_exact_match_rejects_a_generation_cut_by_the_token_limit():
    assert exact_correct("left", "left", finished=True)
    assert not exact_correct("left", "left", finished=False)
    assert reference_correct("left", "left")  # the course rule does not know about truncation


def test_normalize_answer():
    assert normalize_answer("  Front   and LEFT?! ") == "front and left"
    assert normalize_answer("...") == ""


@pytest.mark.parametrize(
    "text, value", [("3", 3), (" 12.", 12), ("three", 3), ("Zero", 0), ("3 karts", None), ("", None), ("x", None)]
)
def test_parse_count(text, value):
    assert parse_count(text) == value


def test_majority_breaks_ties_alphabetically():
    assert majority(["b", "a", "b", "a", "c"]) == "a"
    assert majority(["x", "y", "y"]) == "y"
    assert majority([]) is None


def test_summarize_per_family_mae_and_confusion():
    scored = [
        score_one("left", "left", "left_right"),
        score_one("right", "left", "left_right"),
        score_one("Right.", "right", "left_right"),
        score_one("up", "right", "left_right"),  # not a label: "(other)" column
        score_one("2", "2", "kart_count"),
        score_one("5", "2", "kart_count"),
        score_one("many", "3", "kart_count"),  # not a number: left out of the MAE, counted
        score_one("10", "1", "kart_count"),  # right by the course rule only
        score_one("", "2", "kart_count"),
    ]
    summary = summarize(scored)
    assert summary["overall"]["n"] == 9
    assert summary["overall"]["exact_accuracy"] == pytest.approx(3 / 9)
    assert summary["overall"]["reference_accuracy"] == pytest.approx(4 / 9)
    assert summary["overall"]["n_empty"] == 1

    lr = summary["families"]["left_right"]
    assert lr["kind"] == "categorical"
    assert lr["exact_accuracy"] == pytest.approx(2 / 4)
    assert lr["confusion"]["labels"] == ["left", "right"]
    assert lr["confusion"]["columns"] == ["left", "right", OTHER_LABEL]
    assert lr["confusion"]["matrix"] == [[1, 1, 0], [0, 1, 1]]

    kc = summary["families"]["kart_count"]
    assert kc["kind"] == "count"
    assert kc["n"] == 5
    assert kc["exact_accuracy"] == pytest.approx(1 / 5)
    assert kc["reference_accuracy"] == pytest.approx(2 / 5)
    assert kc["n_unparsed"] == 2  # "many" and ""
    assert kc["mae"] == pytest.approx((0 + 3 + 9) / 3)
    assert "confusion" not in kc


# ------------------------------------------------------------------------------------------ templates, prior


def test_match_template_uses_the_registered_question_families():
    assert match_template("Is nolok to the left or right of the ego car?") == (
        "left_right",
        "Is {kart} to the left or right of the ego car?",
    )
    assert match_template("Where is sara_the_racer relative to the ego car?")[0] == "relative_position"
    assert match_template("How many karts are behind the ego car?")[0] == "directional_count"
    assert match_template("What track is this?") == ("track", "What track is this?")
    assert match_template("Is the sky blue?") == (None, "Is the sky blue?")


def test_blind_prior_answers_by_template_then_family_then_overall():
    prior = BlindPrior.fit(
        [
            ("Is {kart} to the left or right of the ego car?", "left_right", "right"),
            ("Is {kart} to the left or right of the ego car?", "left_right", "right"),
            ("Is {kart} to the left or right of the ego car?", "left_right", "left"),
            ("How many karts are to the left of the ego car?", "directional_count", "0"),
            ("How many karts are behind the ego car?", "directional_count", "1"),
            ("How many karts are behind the ego car?", "directional_count", "1"),
            ("What track is this?", "track", "abyss"),
        ]
    )
    assert prior.predict("Is {kart} to the left or right of the ego car?", "left_right") == "right"
    assert prior.predict("How many karts are to the left of the ego car?", "directional_count") == "0"
    assert prior.predict("How many karts are in front of the ego car?", "directional_count") == "1"  # family
    assert prior.predict("What kart is the ego car?", "ego_kart") == "1"  # overall: "1" twice, "right" twice -> "1"
    assert prior.n_train == 7
    with pytest.raises(ValueError):
        BlindPrior.fit([])


# ------------------------------------------------------------------------------------------ data


def _write_course_layout(root: Path, n_good: int = 3) -> Path:
    """``root/valid/*.jpg`` + ``root/valid_grader/balanced_qa_pairs.json`` with one missing and one corrupt image."""
    from PIL import Image

    (root / "valid").mkdir(parents=True)
    (root / "valid_grader").mkdir()
    records = []
    for i in range(n_good):
        name = f"valid/{i:05x}_00_im.jpg"
        Image.new("RGB", (150, 100), (10 * i, 20, 30)).save(root / name)
        records.append(
            {"image_file": name, "question": "Is kiki to the left or right of the ego car?", "answer": "left"}
        )
        records.append({"image_file": name, "question": "How many karts are there in the scenario?", "answer": str(i)})
    (root / "valid/0000f_00_im.jpg").write_bytes(b"not a jpeg")
    records.append({"image_file": "valid/0000f_00_im.jpg", "question": "What track is this?", "answer": "abyss"})
    records.append({"image_file": "valid/missing_00_im.jpg", "question": "What track is this?", "answer": "abyss"})
    path = root / "valid_grader" / "balanced_qa_pairs.json"
    path.write_text(json.dumps(records))
    return path


def test_legacy_json_items_and_unreadable_images(tmp_path):
    qa_json = _write_course_layout(tmp_path / "data")
    items = load_items(qa_json)
    assert len(items) == 8
    assert [it.family for it in items[:2]] == ["left_right", "kart_count"]
    assert items[0].template == "Is {kart} to the left or right of the ego car?"
    assert items[0].image_key == items[1].image_key != items[2].image_key
    assert open_image(items[0].image).size == (150, 100)  # image_file resolved against the course's data folder
    for bad in items[-2:]:
        with pytest.raises(UnreadableImageError):
            open_image(bad.image)
    # an explicit data folder wins over the guess
    moved = load_items(qa_json, data_dir=tmp_path / "elsewhere")
    assert Path(moved[0].image) == tmp_path / "elsewhere" / "valid/00000_00_im.jpg"


def test_legacy_json_bad_input_names_file_and_field(tmp_path):
    path = tmp_path / "qa.json"
    path.write_text(json.dumps([{"image_file": "a.jpg", "question": "q?", "answer": "a"}, {"image_file": "b.jpg"}]))
    with pytest.raises(DataSourceError, match=r"qa\.json: item 1: field 'question'"):
        load_items(path)
    path.write_text("{not json")
    with pytest.raises(DataSourceError, match=r"qa\.json: not a readable JSON"):
        load_items(path)
    with pytest.raises(DataSourceError, match="no such file"):
        load_items(tmp_path / "absent.json")


def test_dataset_items_sampling_is_reproducible(color_chat_dataset_dir):
    every = load_items(color_chat_dataset_dir, split="train")
    assert len(every) == 8
    assert {it.answer for it in every} == {"red", "green", "blue", "yellow"}
    assert all(it.family == "color" and isinstance(it.image, bytes) for it in every)
    assert open_image(every[0].image).size == (64, 64)

    a = load_items(color_chat_dataset_dir, split="train", max_samples=5, seed=1)
    b = load_items(color_chat_dataset_dir, split="train", max_samples=5, seed=1)
    c = load_items(color_chat_dataset_dir, split="train", max_samples=5, seed=2)
    assert len(a) == 5
    assert [it.source for it in a] == [it.source for it in b]
    assert [it.source for it in a] != [it.source for it in c]
    assert {it.source for it in a} <= {it.source for it in every}
    assert len(load_items(color_chat_dataset_dir, split="train", max_samples=100)) == 8

    with pytest.raises(DataSourceError, match="no split 'test'"):
        load_items(color_chat_dataset_dir, split="test")
    assert sorted(a for _, _, a in training_qa(color_chat_dataset_dir, "train")) == sorted(it.answer for it in every)


def test_grouped_rows_give_one_item_per_turn(tmp_path):
    """A grouped row (one image, a multi-turn conversation) yields one item per question, all on one image."""
    import datasets
    from PIL import Image

    turns = [("What track is this?", "abyss"), ("How many karts are there in the scenario?", "3")]
    messages = []
    for k, (q, a) in enumerate(turns):
        content = ([{"type": "image", "text": None}] if k == 0 else []) + [{"type": "text", "text": q}]
        messages += [
            {"role": "user", "content": content},
            {"role": "assistant", "content": [{"type": "text", "text": a}]},
        ]
    ds = datasets.Dataset.from_dict(
        {
            "images": [[Image.new("RGB", (30, 20), (1, 2, 3))]],
            "messages": [messages],
            "family": [["track", "kart_count"]],
            "image_file": ["valid/00000_00_im.jpg"],
        },
        features=datasets.Features(
            {
                "images": datasets.Sequence(datasets.Image()),
                "messages": [{"role": datasets.Value("string"),
                              "content": [{"type": datasets.Value("string"), "text": datasets.Value("string")}]}],
                "family": datasets.Sequence(datasets.Value("string")),
                "image_file": datasets.Value("string"),
            }
        ),
    )  # fmt: skip
    (tmp_path / "data").mkdir()
    ds.to_parquet(str(tmp_path / "data" / "validation-00000-of-00001.parquet"))
    items = load_items(tmp_path, split="validation")
    assert [(it.question, it.answer, it.family) for it in items] == [
        ("What track is this?", "abyss", "track"),
        ("How many karts are there in the scenario?", "3", "kart_count"),
    ]
    assert items[0].image_key == items[1].image_key == "valid/00000_00_im.jpg"


# ------------------------------------------------------------------------------------------ batching, decoding


def _item(key: str, question: str = "q?", answer: str = "a") -> EvalItem:
    return EvalItem(question=question, answer=answer, family="f", template=question, image_key=key, image=key,
                    source=key)  # fmt: skip


def test_batches_keep_an_images_questions_together():
    from stk_vqa.evaluation.inference import make_batches

    items = [_item("a"), _item("b"), _item("a"), _item("c"), _item("b"), _item("a"), _item("c")]
    batches = make_batches(items, batch_size=4)
    assert sorted(i for b in batches for i in b) == list(range(len(items)))
    assert all(len(b) <= 4 for b in batches)
    for key in "abc":  # every image whose questions fit in a batch is in exactly one batch
        assert sum(any(items[i].image_key == key for i in b) for b in batches) == 1
    big = make_batches([_item("a")] * 5 + [_item("b")], batch_size=2)
    assert [len(b) for b in big] == [2, 2, 2]
    with pytest.raises(ValueError):
        make_batches(items, 0)


def test_decode_generation_stops_at_end_of_utterance_and_survives_garbage():
    from stk_vqa.evaluation.inference import decode_generation

    class Tok:
        def decode(self, ids, skip_special_tokens=True):
            if any(i > 100 for i in ids):
                raise IndexError("id out of range")
            return " " + "".join(chr(ord("a") + i) for i in ids) + " "

    done = decode_generation(Tok(), [0, 1, 2, 7, 5, 5], stop_ids=[7])
    assert (done.text, done.finished, done.n_tokens) == ("abc", True, 3)
    cut = decode_generation(Tok(), [0, 1, 2], stop_ids=[7])
    assert (cut.text, cut.finished) == ("abc", False)
    garbage = decode_generation(Tok(), [1000, 2000], stop_ids=[7])
    assert garbage.text == "" and not garbage.finished
    empty = decode_generation(Tok(), [7], stop_ids=[7])
    assert empty.text == "" and empty.finished


# ------------------------------------------------------------------------------------------ report files


def test_report_files_parse(tmp_path):
    from stk_vqa.evaluation.report import build_results, console_table, write_report

    items = [
        _item("i0", "Is kiki to the left or right of the ego car?", "left"),
        _item("i0", "How many karts are there in the scenario?", "3"),
        _item("i1", "Is kiki to the left or right of the ego car?", "right"),
        _item("i1", "How many karts are there in the scenario?", "1"),
        _item("i2", "What track is this?", "abyss"),
    ]
    items = [EvalItem(**{**it.__dict__, "family": match_template(it.question)[0]}) for it in items]
    answers = {
        "blind_prior": {"kind": "prior", "source": "train", "texts": ["left", "1", "left", "1", "abyss"],
                        "finished": [True] * 5},
        "adapter": {"kind": "adapter", "source": "runs/a", "texts": ["left", "3", "right", "10", None],
                    "finished": [True, True, True, False, False]},
    }  # fmt: skip
    results, records = build_results(items, answers, {4: "i2: cannot identify image"}, {"data": "x", "split": "v"})
    out = write_report(tmp_path / "report", results, records)

    loaded = json.loads((out / "results.json").read_text())
    assert loaded["data"]["n_evaluated"] == 4 and loaded["data"]["n_skipped"] == 1
    assert loaded["data"]["skipped"][0]["reason"] == "i2: cannot identify image"
    assert list(loaded["data"]["families"]) == ["kart_count", "left_right"]  # registry order, skipped left out
    assert loaded["data"]["count_families"] == ["kart_count"]
    adapter = loaded["models"]["adapter"]
    assert adapter["overall"]["exact_accuracy"] == pytest.approx(3 / 4)
    assert adapter["overall"]["reference_accuracy"] == pytest.approx(1.0)  # "10" passes for "1"
    assert adapter["families"]["kart_count"]["mae"] == pytest.approx(4.5)
    assert loaded["models"]["blind_prior"]["overall"]["exact_accuracy"] == pytest.approx(2 / 4)
    assert loaded["versions"]["transformers"]

    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 5
    assert lines[3]["predictions"]["adapter"] == {
        "text": "10", "finished": False, "reference_correct": True, "exact_correct": False
    }  # fmt: skip
    assert lines[4]["skipped"] and lines[4]["predictions"] == {}

    md = (out / "report.md").read_text()
    assert "| kart_count | 2 | 50.0% / 50.0% | 50.0% / 100.0% |" in md
    assert "### adapter: left_right" in md and "| left | 1 | 0 | 0 |" in md
    assert "i2: cannot identify image" in md
    assert (out / "accuracy_by_family.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = console_table(loaded)
    assert "75.0% (100.0%)" in table and "1 questions skipped" in table
    with pytest.raises(FileExistsError):
        write_report(tmp_path / "report", results, records)


def test_single_image_column_and_rows_without_messages(tmp_path):
    """A split whose ``images`` column holds one image per row and that has question/answer but no messages."""
    import datasets
    from PIL import Image

    ds = datasets.Dataset.from_dict(
        {
            "images": [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))],
            "question": ["What track is this?", "Is tux in front of or behind the ego car?"],
            "answer": ["abyss", "back"],
        },
        features=datasets.Features(
            {"images": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")}
        ),
    )
    (tmp_path / "data").mkdir()
    ds.to_parquet(str(tmp_path / "data" / "validation-00000-of-00001.parquet"))
    items = load_items(tmp_path, split="validation")
    assert [(it.family, it.answer) for it in items] == [("track", "abyss"), ("front_back", "back")]
    assert items[0].image_key != items[1].image_key  # no image_file column: keyed by content
    assert open_image(items[1].image).getpixel((0, 0)) == (0, 0, 255)
