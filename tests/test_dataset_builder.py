"""The dataset builder: Hub parquet layout, TRL rows, determinism, splits, grouping, bad input, push."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import datasets
import pytest
from PIL import Image

from stk_vqa.data import builder as dataset_builder
from stk_vqa.data.builder import build
from stk_vqa.data.configs import BuildConfig
from stk_vqa.data.generate import iter_split_qa, qa_records
from stk_vqa.data.hub import HubPushError, hub_upload_files, push_dataset_folder
from stk_vqa.data.info_file import InfoFileError


def make_course_folder(root: Path, reference_info_dir: Path, frames: dict[str, int], size=(150, 100)) -> Path:
    """A data folder in the course layout: reference info files under new ids + placeholder images."""
    infos = sorted(reference_info_dir.glob("*_info.json"))
    counter = 0
    for split, n in frames.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            fid = f"{counter:05x}"
            shutil.copy(infos[counter % len(infos)], root / split / f"{fid}_info.json")
            for v in range(10):
                Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(
                    root / split / f"{fid}_{v:02d}_im.jpg"
                )
            counter += 1
    return root


@pytest.fixture(scope="module")
def course_data(tmp_path_factory, reference_info_dir) -> Path:
    return make_course_folder(tmp_path_factory.mktemp("course") / "data", reference_info_dir, {"train": 8, "valid": 4})


def sha256_tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_build_roundtrip_schema_and_rows(course_data, tmp_path):
    out, report = build(BuildConfig(data_dir=str(course_data), out_dir=str(tmp_path / "ds")))
    assert sorted(hub_upload_files(out)) == [
        "README.md",
        "data/train-00000-of-00001.parquet",
        "data/validation-00000-of-00001.parquet",
    ]
    ds = datasets.load_dataset(str(out))
    assert set(ds) == {"train", "validation"}
    assert ds["train"].column_names == [
        "images",
        "messages",
        "question",
        "answer",
        "family",
        "frame_id",
        "view_index",
        "track",
        "image_file",
    ]
    # every QA pair of the generator is a row, in order, with the same text
    expected = qa_records(iter_split_qa(course_data / "valid", progress=False))
    rows = ds["validation"]
    assert len(rows) == len(expected) == report.rows_after["validation"]
    for row, rec in zip(rows.select(range(25)), expected[:25]):
        assert row["image_file"] == rec["image_file"] and row["family"] == rec["family"]
        assert row["messages"] == [
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": rec["question"]}]},
            {"role": "assistant", "content": [{"type": "text", "text": rec["answer"]}]},
        ]
        # images are embedded (decodable, same pixels as the file), not paths to files elsewhere
        assert row["images"][0].tobytes() == Image.open(course_data / rec["image_file"]).convert("RGB").tobytes()
    # nothing in the parquet points outside the folder: it still loads after the sources are gone
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    assert datasets.load_dataset(str(moved), split="validation")[0]["images"][0].size == (150, 100)
    card = (out / "README.md").read_text()
    assert "configs:" in card and "dataset_info:" in card and "| ego_kart | yes |" in card


def test_build_is_deterministic(course_data, tmp_path):
    cfg = dict(data_dir=str(course_data), balance=True, seed=3, num_proc=2)
    a, _ = build(BuildConfig(out_dir=str(tmp_path / "a"), **cfg))
    b, _ = build(BuildConfig(out_dir=str(tmp_path / "b"), **cfg))
    ha, hb = sha256_tree(a), sha256_tree(b)
    ha.pop("README.md"), hb.pop("README.md")  # the card names the output folder
    assert ha == hb and len(ha) == 3  # two parquet shards and the stk-vqa marker


def test_group_by_image(course_data, tmp_path):
    out, _ = build(
        BuildConfig(data_dir=str(course_data), out_dir=str(tmp_path / "g"), group_by_image=True, splits="valid")
    )
    ds = datasets.load_dataset(str(out), split="validation")
    assert len(ds) == 40  # 4 frames x 10 views, every view has a kart
    assert len(set(ds["image_file"])) == len(ds)
    row = ds[0]
    assert len(row["messages"]) == 2 * len(row["question"]) == 2 * len(row["answer"])
    images_in_turns = [sum(c["type"] == "image" for c in m["content"]) for m in row["messages"] if m["role"] == "user"]
    assert images_in_turns[0] == 1 and sum(images_in_turns) == 1
    assert [m["content"][-1]["text"] for m in row["messages"][1::2]] == row["answer"]


@pytest.mark.parametrize("split_by", ["frame", "track"])
def test_resplit_never_shares_frames_or_tracks(course_data, tmp_path, split_by):
    out, _ = build(
        BuildConfig(
            data_dir=str(course_data),
            out_dir=str(tmp_path / split_by),
            split_by=split_by,
            validation_fraction=0.3,
            seed=1,
        )
    )
    ds = datasets.load_dataset(str(out))
    key = (lambda r: r["image_file"][:-10]) if split_by == "frame" else (lambda r: r["track"])  # strip _VV_im.jpg
    train = {key(r) for r in ds["train"].remove_columns("images")}
    valid = {key(r) for r in ds["validation"].remove_columns("images")}
    assert train and valid and not train & valid


def test_grader_style_and_balance_reported(course_data, tmp_path, capsys):
    out, report = build(
        BuildConfig(data_dir=str(course_data), out_dir=str(tmp_path / "gs"), grader_style=5, splits="valid")
    )
    ds = datasets.load_dataset(str(out), split="validation")
    counts = Counter(ds["family"])
    assert set(counts.values()) == {5}
    assert all(a != "0" for a, f in zip(ds["answer"], ds["family"]) if f == "directional_count")
    console = capsys.readouterr().out
    before = sum(report.distribution_before["validation"]["directional_count"].values())
    assert before > 5 and f"| directional_count | {before} -> 5 |" in console
    assert "-> 5" in (out / "README.md").read_text()


def test_bad_images_strict_and_skipped(reference_info_dir, tmp_path):
    data = make_course_folder(tmp_path / "data", reference_info_dir, {"valid": 2})
    (data / "valid" / "00000_03_im.jpg").write_bytes(b"")
    good = (data / "valid" / "00000_04_im.jpg").read_bytes()
    (data / "valid" / "00000_04_im.jpg").write_bytes(good[: len(good) // 2])
    Image.new("RGB", (64, 64)).save(data / "valid" / "00001_05_im.jpg")
    with pytest.raises(InfoFileError, match=r"00000_03_im.jpg.*empty file"):
        build(BuildConfig(data_dir=str(data), out_dir=str(tmp_path / "strict"), splits="valid", strict=True))
    assert not (tmp_path / "strict").exists()
    out, report = build(BuildConfig(data_dir=str(data), out_dir=str(tmp_path / "lenient"), splits="valid"))
    assert report.skipped_images == 2
    files = set(datasets.load_dataset(str(out), split="validation")["image_file"])
    assert {"valid/00000_03_im.jpg", "valid/00000_04_im.jpg"}.isdisjoint(files)
    assert "valid/00001_05_im.jpg" in files  # a view of another size is labelled at its own size, not dropped
    assert len({f for f in files}) == 18


def test_failed_build_leaves_nothing_loadable(course_data, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("stk_vqa.data.builder.write_dataset_card", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        build(BuildConfig(data_dir=str(course_data), out_dir=str(tmp_path / "ds"), splits="valid"))
    assert list(tmp_path.iterdir()) == []  # no out_dir, no leftover partial folder


def test_existing_output_needs_overwrite(course_data, tmp_path):
    cfg = BuildConfig(data_dir=str(course_data), out_dir=str(tmp_path / "ds"), splits="valid")
    build(cfg)
    with pytest.raises(FileExistsError, match="overwrite"):
        build(cfg)
    cfg.overwrite = True
    build(cfg)


def test_legacy_qa_file(course_data, tmp_path):
    legacy = tmp_path / "balanced_qa_pairs.json"
    legacy.write_text(
        json.dumps(
            [
                {"image_file": "valid/00008_00_im.jpg", "question": "What track is this?", "answer": "abyss"},
                {
                    "image_file": "valid/00008_01_im.jpg",
                    "question": "Is gnu to the left or right of the ego car?",
                    "answer": "left",
                },
                {
                    "image_file": "valid/00009_02_im.jpg",
                    "question": "How many karts are behind the ego car?",
                    "answer": "2",
                },
            ]
        )
    )
    out, _ = build(BuildConfig(data_dir=str(course_data), out_dir=str(tmp_path / "legacy"), legacy_qa_file=str(legacy)))
    ds = datasets.load_dataset(str(out), split="validation")
    assert ds["family"] == ["track", "left_right", "directional_count"]
    assert ds["frame_id"] == ["00008", "00008", "00009"] and ds["view_index"] == [0, 1, 2]
    assert ds["track"][0] == json.loads((course_data / "valid" / "00008_info.json").read_text())["track"]


def test_push_fails_clearly_offline_or_without_token(course_data, tmp_path, monkeypatch):
    out, _ = build(BuildConfig(data_dir=str(course_data), out_dir=str(tmp_path / "ds"), splits="valid"))
    before = sha256_tree(out)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubPushError, match="HF_HUB_OFFLINE.*local dataset is intact"):
        push_dataset_folder(out, "me/stk-vqa")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(HubPushError, match="no Hugging Face token"):
        push_dataset_folder(out, "me/stk-vqa")
    assert sha256_tree(out) == before


def test_push_uploads_exactly_the_built_files(course_data, tmp_path, monkeypatch):
    """Intercept the Hub client at its boundary and check the upload's files and bytes."""
    out, _ = build(BuildConfig(data_dir=str(course_data), out_dir=str(tmp_path / "ds"), splits="valid"))
    (out / ".scratch").write_text("not for upload")
    import huggingface_hub

    calls = {}

    class RecordingApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, repo_type, private, exist_ok):
            calls["repo"] = (repo_id, repo_type, private)

        def upload_folder(self, folder_path, repo_id, repo_type, allow_patterns, commit_message):
            calls["files"] = {p: (Path(folder_path) / p).read_bytes() for p in allow_patterns}

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    push_dataset_folder(out, "me/stk-vqa", token="hf_test")
    assert calls["repo"] == ("me/stk-vqa", "dataset", False)
    assert sorted(calls["files"]) == ["README.md", "data/validation-00000-of-00001.parquet"]
    # what is uploaded is what load_dataset reads locally
    local = tmp_path / "as_uploaded"
    for name, data in calls["files"].items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(data)
    assert len(datasets.load_dataset(str(local), split="validation")) == len(
        datasets.load_dataset(str(out), split="validation")
    )


def test_shards_respect_max_size(course_data, tmp_path):
    out, _ = build(
        BuildConfig(data_dir=str(course_data), out_dir=str(tmp_path / "ds"), splits="train", max_shard_size="300KB")
    )
    shards = sorted((out / "data").glob("train-*.parquet"))
    assert len(shards) > 1 and shards[0].name.endswith(f"-of-{len(shards):05d}.parquet")
    # each row embeds its own copy of its image, so the estimate counts rows, not distinct files
    assert max(s.stat().st_size for s in shards) <= 300_000
    assert len(datasets.load_dataset(str(out), split="train")) == sum(
        len(datasets.Dataset.from_parquet(str(s))) for s in shards
    )


def test_build_and_preview_commands(course_data, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "ds"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stk_vqa.cli",
            "build",
            "--data_dir",
            str(course_data),
            "--out_dir",
            str(out),
            "--splits",
            "valid",
            "--grader_style",
            "3",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    pairs = len(qa_records(iter_split_qa(course_data / "valid", progress=False)))
    assert f"validation: {pairs} QA rows -> 21 rows written" in result.stdout  # 7 families x 3
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stk_vqa.cli",
            "preview",
            "--dataset",
            str(out),
            "--data_dir",
            str(course_data),
            "--out_dir",
            str(tmp_path / "prev"),
            "--num_rows",
            "4",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    grid = Image.open(tmp_path / "prev" / "preview.png")
    assert grid.width >= 4 * 450
    html = (tmp_path / "prev" / "index.html").read_text()
    assert html.count("<figure>") == 4 and "images/000.png" in html
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stk_vqa.cli",
            "build",
            "--data_dir",
            str(course_data),
            "--out_dir",
            str(tmp_path / "x"),
            "--bogus",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "bogus" in result.stderr


def test_build_from_bundled_rendered_sample_names_box_method(tmp_path):
    sample = Path(dataset_builder.__file__).parent / "sample"
    out, report = build(BuildConfig(data_dir=str(sample), out_dir=str(tmp_path / "ds")))
    assert report.rows_after["train"] > 100 and report.rows_after["validation"] > 50
    assert set(report.box_methods) == {"engine-instance-map"}
    card = (out / "README.md").read_text()
    assert "frame(s): `engine-instance-map`: frames rendered by `stk-vqa render`; boxes are the tight" in card
    ds = datasets.load_dataset(str(out), split="validation")
    assert ds[0]["images"][0].size == (150, 100)


def test_card_says_when_boxes_come_from_the_source(course_data, tmp_path):
    out, _ = build(BuildConfig(data_dir=str(course_data), out_dir=str(tmp_path / "ds"), splits="valid"))
    assert "frame(s): `not stated`: boxes as given in the source info files" in (out / "README.md").read_text()


def test_legacy_qa_file_with_a_bad_info_file_names_it(tmp_path):
    (tmp_path / "valid").mkdir()
    (tmp_path / "valid" / "00000_info.json").write_text("{bad")
    qa = tmp_path / "qa.json"
    qa.write_text(
        json.dumps([{"image_file": "valid/00000_00_im.jpg", "question": "What track is this?", "answer": "x"}])
    )
    with pytest.raises(InfoFileError, match=r"00000_info.json: field '<json>'"):
        build(BuildConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "out"), legacy_qa_file=str(qa)))
    qa.write_text(json.dumps([{"image_file": "valid/00000_00_im.jpg", "question": "What track is this?"}]))
    with pytest.raises(ValueError, match=r"qa.json: item 0: field 'answer' missing"):
        build(BuildConfig(data_dir=str(tmp_path), out_dir=str(tmp_path / "out"), legacy_qa_file=str(qa)))


def test_several_split_folders_merge_into_one_split(reference_info_dir, tmp_path):
    """Renders of several machines (`stk-vqa render --shard K/N` into shard-K/) build into one DatasetDict."""
    data = make_course_folder(
        tmp_path / "data", reference_info_dir, {"shard-0/train": 2, "shard-1/train": 3, "shard-0/valid": 1}
    )
    whole = make_course_folder(tmp_path / "whole", reference_info_dir, {"train": 5, "valid": 1})
    out, report = build(BuildConfig(data_dir=str(data), splits="shard-0/train,shard-1/train,shard-0/valid",
                                    out_dir=str(tmp_path / "out")))  # fmt: skip
    _, whole_report = build(BuildConfig(data_dir=str(whole), out_dir=str(tmp_path / "out-whole")))
    assert report.rows_after == whole_report.rows_after  # the same frames, split over two folders
    train = datasets.load_dataset(str(out), split="train")
    folders = {name.rsplit("/", 1)[0] for name in train["image_file"]}
    assert folders == {"shard-0/train", "shard-1/train"}
    for name in train["image_file"][:3]:
        assert (data / name).is_file()  # image_file stays relative to data_dir


def test_shuffled_image_control_keeps_questions_and_moves_images(course_data, tmp_path):
    real, _ = build(BuildConfig(data_dir=str(course_data), out_dir=str(tmp_path / "real"), seed=3))
    control, _ = build(BuildConfig(data_dir=str(course_data), out_dir=str(tmp_path / "control"), seed=3,
                                   shuffle_images=True))  # fmt: skip
    a, b = (datasets.load_dataset(str(path)) for path in (real, control))
    for column in ("question", "answer", "family", "frame_id", "view_index"):
        assert a["train"][column] == b["train"][column]
    moved = [x != y for x, y in zip(a["train"]["image_file"], b["train"]["image_file"])]
    assert sum(moved) > 0.8 * len(moved)  # almost every question now comes with another image
    assert sorted(a["train"]["image_file"]) == sorted(b["train"]["image_file"])  # the same images, permuted
    first = b["train"].select([0])[0]
    assert (
        first["images"][0].tobytes() == Image.open(course_data / first["image_file"]).tobytes()
    )  # embeds what it names
    assert a["validation"]["image_file"] == b["validation"]["image_file"]  # evaluation splits untouched
    assert "images are shuffled" in (control / "README.md").read_text()
