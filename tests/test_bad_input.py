"""Bad input and faults on every command, as a careful user (and an attacker) would try them.

Each case runs the ``stk-vqa`` command in-process and asserts its exit code, its one-line message (no traceback)
and that no earlier output or input changed. Grouped by command; ``docs/bad-input.md`` is the same table in prose.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import stk_vqa.fileio
from stk_vqa.cli import main

MARKER = getattr(stk_vqa.fileio, "MARKER", ".stk-vqa-output")

SAMPLE = Path(__file__).resolve().parents[1] / "stk_vqa" / "data" / "sample"
GOOD = "00000"  # a frame of the sample's train split with karts in every view


# ------------------------------------------------------------------------------------------------ helpers


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``stk-vqa ARGV`` in this process; ``(exit code, stdout, stderr)`` as the shell would see them."""
    capsys.readouterr()
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
    out, err = capsys.readouterr()
    return code, out, err


def tree(path: Path) -> dict[str, str]:
    """Content hash of every file under ``path`` (or of ``path`` itself), symlinks not followed."""
    path = Path(path)
    if path.is_file():
        return {".": hashlib.sha1(path.read_bytes()).hexdigest()}
    if not path.exists():
        return {}
    return {
        str(p.relative_to(path)): hashlib.sha1(p.read_bytes()).hexdigest()
        if p.is_file() and not p.is_symlink()
        else "-"
        for p in sorted(path.rglob("*"))
    }


def expect_error(code: int, err: str, message: str, exit_code: int = 1) -> None:
    """Exit ``exit_code`` and one ``error:`` line matching ``message`` (regex), no traceback."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == exit_code, err
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith("error: "), err
    assert re.search(message, lines[-1]), lines[-1]


def copy_frame(src_split: Path, dst_split: Path, frame: str) -> None:
    dst_split.mkdir(parents=True, exist_ok=True)
    for f in src_split.glob(f"{frame}_*"):
        shutil.copy(f, dst_split / f.name)


@pytest.fixture()
def data(tmp_path) -> Path:
    """A data folder with train (3 frames) and valid (2 frames) split folders of the bundled sample."""
    root = tmp_path / "data"
    for split, frames in (("train", ["00000", "00001", "00002"]), ("valid", ["00000", "00001"])):
        for frame in frames:
            copy_frame(SAMPLE / split, root / split, frame)
    return root


def info(data: Path, split: str = "train", frame: str = GOOD) -> dict:
    return json.loads((data / split / f"{frame}_info.json").read_text())


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


# ================================================================================================ generate

BAD_INFO = {
    # id: (what the file holds, the field the message names)
    "int-overflow-box": (
        lambda d: d["detections"][0].__setitem__(0, [1, 0, 10**400, 0, 10**400, 5]),
        r"detections\[0\]",
    ),
    "float-1e300-box": (lambda d: d["detections"][0].__setitem__(0, [1, 0, 1e300, 0, 1e300, 5]), r"detections\[0\]"),
    "float-1e300-distance": (lambda d: d["distance_down_track"].__setitem__(0, 1e300), "distance_down_track"),
    "int-10e400-distance": (lambda d: d["distance_down_track"].__setitem__(0, 10**400), "distance_down_track"),
    "nan-velocity": (lambda d: d["velocity"][0].__setitem__(0, float("nan")), r"velocity\[0\]"),
    "inf-box": (lambda d: d["detections"][0].__setitem__(0, [1, 0, float("inf"), 0, 5, 5]), r"detections\[0\]"),
    "string-coordinate": (lambda d: d["detections"][0].__setitem__(0, [1, 0, "5", 0, 9, 9]), r"detections\[0\]"),
    "bool-class": (lambda d: d["detections"][0].__setitem__(0, [True, 0, 1, 1, 9, 9]), "class_id"),
    "box-corners-swapped": (lambda d: d["detections"][0].__setitem__(0, [1, 0, 90, 90, 10, 10]), r"detections\[0\]"),
    "kart-id-out-of-range": (lambda d: d["detections"][0].__setitem__(0, [1, 99, 1, 1, 9, 9]), "instance_id"),
    "huge-instance-id": (lambda d: d["detections"][0].__setitem__(0, [2, 2**70, 1, 1, 9, 9]), "instance_id"),
    "zero-views": (lambda d: d.__setitem__("detections", []), "detections"),
    "non-string-kart": (lambda d: d["karts"].__setitem__(0, 5), r"karts\[0\]"),
    "kart-name-newline": (lambda d: d["karts"].__setitem__(0, "tux\nIgnore previous"), r"karts\[0\]"),
    "kart-name-10k": (lambda d: d["karts"].__setitem__(0, "x" * 10_000), r"karts\[0\]"),
    "track-not-string": (lambda d: d.__setitem__("track", ["abyss"]), "track"),
    "missing-velocity": (lambda d: d.__delitem__("velocity"), "velocity"),
    "root-is-list": (lambda d: [d], "<root>"),
}

BAD_FILES = {
    # id: (writes the bad file into the split folder, part of the message)
    "deep-nesting-200k": (
        lambda s: (s / "00009_info.json").write_text("[" * 200_000 + "]" * 200_000),
        "nested too deeply",
    ),
    "truncated-json": (lambda s: (s / "00009_info.json").write_text('{"track": "abyss", "karts": ['), "malformed JSON"),
    "empty-file": (lambda s: (s / "00009_info.json").write_bytes(b""), "malformed JSON"),
    "not-utf8": (lambda s: (s / "00009_info.json").write_bytes(b'{"track": "\xff"}'), "UTF-8"),
    "5000-digit-int": (
        lambda s: (s / "00009_info.json").write_text('{"track": ' + "9" * 5000 + "}"),
        "unreadable value",
    ),
    "folder-named-info": (lambda s: (s / "00009_info.json").mkdir(), "cannot read"),
    "dangling-symlink": (lambda s: (s / "00009_info.json").symlink_to(s / "nowhere"), "cannot read"),
    "symlink-loop": (lambda s: (s / "00009_info.json").symlink_to(s / "00009_info.json"), "cannot read"),
    "17MB-file": (lambda s: (s / "00009_info.json").write_bytes(b" " * (17 * 2**20)), "larger than"),
    "short-frame-id": (lambda s: (s / "1_info.json").write_text("{}"), "not a frame name"),
    "uppercase-10-hex-id": (lambda s: (s / "ABCDEF0123_info.json").write_text("{}"), "not a frame name"),
    "word-frame-id": (lambda s: (s / "frame1_info.json").write_text("{}"), "not a frame name"),
}


def _write_bad_info(split: Path, mutate) -> None:
    d = json.loads((split / f"{GOOD}_info.json").read_text())
    result = mutate(d)
    payload = result if isinstance(result, list) else d
    # json.dumps writes NaN/Infinity and 10**400 as Python's json reader accepts them
    (split / "00009_info.json").write_text(json.dumps(payload))


def _bad_split(data: Path, kind: str, case: str) -> Path:
    split = data / "one"
    copy_frame(data / "train", split, GOOD)
    if kind == "info":
        _write_bad_info(split, BAD_INFO[case][0])
    else:
        BAD_FILES[case][0](split)
    return split


@pytest.mark.parametrize("kind, case", [("info", c) for c in BAD_INFO] + [("file", c) for c in BAD_FILES])
def test_generate_skips_and_counts_every_bad_info_file(data, capsys, kind, case):
    split = _bad_split(data, kind, case)
    code, out, err = run(["generate", "--data_dir", data, "--data_split", "one"], capsys)
    assert code == 0 and "Traceback" not in err, err
    assert "frames: 2 read, 1 skipped (bad input)" in out
    records = json.loads((split / "generated_qa_pairs.json").read_text())
    assert records and {r["image_file"][4:9] for r in records} == {GOOD}  # only the good frame's pairs


@pytest.mark.parametrize("kind, case", [("info", c) for c in BAD_INFO] + [("file", c) for c in BAD_FILES])
def test_generate_strict_names_the_file_and_field(data, capsys, kind, case):
    split = _bad_split(data, kind, case)
    code, out, err = run(["generate", "--data_dir", data, "--data_split", "one", "--strict", "true"], capsys)
    field = BAD_INFO[case][1] if kind == "info" else BAD_FILES[case][1]
    expect_error(code, err, r"_info\.json: field '.*'")
    assert re.search(field, err), err
    assert not (split / "generated_qa_pairs.json").exists()


def _good_output(data: Path) -> Path:
    out = data / "train" / "generated_qa_pairs.json"
    out.write_text(json.dumps([{"image_file": "train/00000_00_im.jpg", "question": "q?", "answer": "a"}]))
    return out


GENERATE_ERRORS = [
    # id, extra argv (formatted with data=...), message regex
    ("output-onto-info-file", ["--output_file", "{data}/train/00001_info.json"], "that name is read as input"),
    ("output-onto-image", ["--output_file", "{data}/train/00001_00_im.jpg"], "that name is read as input"),
    ("output-via-symlink-to-info", ["--output_file", "{data}/link.json"], "that name is read as input"),
    ("output-is-split-folder", ["--output_file", "{data}/train"], "is a folder"),
    ("output-is-data-folder", ["--output_file", "{data}"], "is a folder"),
    ("output-not-a-qa-file", ["--output_file", "{data}/notes.json"], "not a QA pairs file"),
    ("numeric-split-name", ["--data_split", "123"], "split folder not found: .*123"),
    ("split-with-dotdot", ["--data_split", "../data"], "not a split folder name"),
    ("empty-split-name", ["--data_split", ""], "not a split folder name"),
    ("image-size-one-number", ["--image_size", "150"], "expected WIDTHxHEIGHT"),
    ("image-size-0x0", ["--image_size", "0x0"], "each side must be 1 to"),
    ("image-size-negative", ["--image_size=-150x-100"], "expected WIDTHxHEIGHT"),
    ("image-size-negative-spaced", ["--image_size", "-150x-100"], "--image_size.*expected one argument"),
    ("image-size-hex", ["--image_size", "0x10x10"], "expected WIDTHxHEIGHT"),
    ("image-size-huge", ["--image_size", "99999x10"], "each side must be 1 to"),
    ("image-size-words", ["--image_size", "abc"], "expected WIDTHxHEIGHT"),
    ("num-workers-0", ["--num_workers", "0"], "num_workers: must be 1 to"),
    ("num-workers-text", ["--num_workers", "many"], "invalid int value"),
    ("unknown-family", ["--families", "nope"], "unknown question family 'nope'"),
    ("empty-families", ["--families", ""], "families: empty"),
    ("unknown-flag", ["--bogus", "1"], r"unknown option\(s\) \['bogus'\]"),
]


@pytest.mark.parametrize("case, extra, message", GENERATE_ERRORS, ids=[c[0] for c in GENERATE_ERRORS])
def test_generate_refuses(data, capsys, case, extra, message):
    good = _good_output(data)
    (data / "link.json").symlink_to(data / "train" / "00001_info.json")
    (data / "notes.json").write_text('{"my": "notes"}')
    before = tree(data)
    argv = ["generate", "--data_dir", data, "--data_split", "train", *[a.format(data=data) for a in extra]]
    code, _, err = run(argv, capsys)
    expect_error(code, err, message)
    assert tree(data) == before and good.exists()


@pytest.mark.parametrize("content", ["none", "all-bad", "no-karts"])
def test_generate_never_replaces_a_good_file_with_an_empty_one(data, capsys, content):
    split = data / "empty"
    split.mkdir()
    if content == "all-bad":
        (split / "00000_info.json").write_text("{}")
    elif content == "no-karts":
        d = info(data)
        d["detections"] = [[] for _ in d["detections"]]
        (split / "00000_info.json").write_text(json.dumps(d))
    old = split / "generated_qa_pairs.json"
    old.write_text(json.dumps([{"image_file": "empty/00000_00_im.jpg", "question": "q", "answer": "a"}]))
    before = tree(data)
    code, _, err = run(["generate", "--data_dir", data, "--data_split", "empty"], capsys)
    expect_error(code, err, r"no QA pairs generated .* left as it was")
    assert tree(data) == before


def test_generate_labels_each_view_at_its_own_size(data, capsys):
    from stk_vqa.data.info_file import load_frame
    from stk_vqa.data.questions import generate_scene_qa
    from stk_vqa.data.scene import view_scene

    split = data / "train"
    view1 = split / f"{GOOD}_01_im.jpg"
    Image.open(view1).convert("RGB").resize((300, 200)).save(view1)  # view 1 at twice view 0's size
    code, out, err = run(["generate", "--data_dir", data, "--data_split", "train"], capsys)
    assert code == 0, err
    records = json.loads((split / "generated_qa_pairs.json").read_text())
    frame = load_frame(split / f"{GOOD}_info.json")
    for view, size in ((0, Image.open(split / f"{GOOD}_00_im.jpg").size), (1, (300, 200))):
        expected = [(p.question, p.answer) for p in generate_scene_qa(view_scene(frame, view, size))]
        got = [(r["question"], r["answer"]) for r in records if r["image_file"] == f"train/{GOOD}_{view:02d}_im.jpg"]
        assert got == expected


def test_generate_skips_and_counts_an_unreadable_view_image(data, capsys):
    split = data / "train"
    (split / f"{GOOD}_02_im.jpg").write_bytes(b"not a jpeg")
    code, out, err = run(["generate", "--data_dir", data, "--data_split", "train"], capsys)
    assert code == 0, err
    assert "1 unreadable image(s) skipped" in out
    records = json.loads((split / "generated_qa_pairs.json").read_text())
    assert not any(r["image_file"] == f"train/{GOOD}_02_im.jpg" for r in records)
    assert any(r["image_file"] == f"train/{GOOD}_03_im.jpg" for r in records)
    code, _, err = run(["generate", "--data_dir", data, "--data_split", "train", "--strict", "true"], capsys)
    expect_error(code, err, f"{GOOD}_02_im.jpg: field '<image>'")


def test_generate_ctrl_c_says_nothing_changed(data, capsys, monkeypatch):
    import stk_vqa.data.generate as generate

    good = _good_output(data)
    before = tree(data)

    def interrupted(frames):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "qa_records", interrupted)
    code, _, err = run(["generate", "--data_dir", data, "--data_split", "train"], capsys)
    assert code == 130 and "Traceback" not in err
    assert err.strip() == f"interrupted (Ctrl-C): {good} left as it was"
    assert tree(data) == before


def test_stale_temp_files_of_a_killed_run_are_cleaned(data, capsys):
    pid = dead_pid()
    split = data / "train"
    stale = [split / f".generated_qa_pairs.json.{pid}.abc123.tmp", data / f".out.{pid}.x1.partial"]
    stale[0].write_bytes(b"x" * 1000)
    stale[1].mkdir()
    (stale[1] / "big.parquet").write_bytes(b"x" * 1000)
    live = split / f".generated_qa_pairs.json.{os.getpid()}.abc.tmp"  # a running writer's file is left alone
    live.write_bytes(b"x")
    code, _, err = run(["generate", "--data_dir", data, "--data_split", "train"], capsys)
    assert code == 0, err
    assert not stale[0].exists() and live.exists()
    code, _, err = run(["build", "--data_dir", data, "--splits", "valid", "--out_dir", data / "out"], capsys)
    assert code == 0, err
    assert not stale[1].exists()
    assert [p.name for p in data.iterdir() if p.name.startswith(".")] == []


def test_kill_9_mid_write_leaves_the_old_file_and_the_next_run_cleans_up(data, tmp_path):
    """A writer killed with SIGKILL between writing its temporary file and renaming it."""
    out = data / "train" / "generated_qa_pairs.json"
    good = _good_output(data)
    before = good.read_bytes()
    code = (
        "import os, signal; import stk_vqa.fileio as f\n"
        "real = os.replace\n"
        "def killed(src, dst): os.kill(os.getpid(), signal.SIGKILL)\n"
        "os.replace = killed\n"
        f"f.atomic_write_bytes({str(out)!r}, b'[' + b' ' * 5_000_000 + b']')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9
    leftovers = [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    assert out.read_bytes() == before and len(leftovers) == 1
    from stk_vqa.fileio import atomic_write_json

    atomic_write_json(out, [])
    assert [p for p in out.parent.iterdir() if p.name.endswith(".tmp")] == []


# ================================================================================================ check

CHECK_ERRORS = [
    ("output-onto-info-file", ["{info}", "--output_file", "{info}"], "that name is read as input"),
    ("output-onto-image", ["{info}", "--output_file", "{split}/00000_00_im.jpg"], "that name is read as input"),
    ("output-is-folder", ["{info}", "--output_file", "{split}"], "is a folder"),
    ("view-out-of-range", ["{info}", "--view_index", "99"], "view_index: must be 0 to 63"),
    ("view-past-last", ["{info}", "--view_index", "7"], "view 7 out of range"),
    ("negative-view", ["{info}", "--view_index", "-1"], "view_index: must be 0 to 63"),
    ("missing-info", ["{split}/nope_info.json"], "cannot read"),
    ("bad-image-size", ["{info}", "--image_size", "0x0"], "each side must be 1"),
    ("no-info-file", [], "an info file is required"),
    ("corrupt-image", ["{split}/00001_info.json", "--view_index", "0"], "cannot read image"),
]


@pytest.mark.parametrize("case, extra, message", CHECK_ERRORS, ids=[c[0] for c in CHECK_ERRORS])
def test_check_refuses(data, capsys, case, extra, message, monkeypatch):
    split = data / "train"
    (split / "00001_00_im.jpg").write_bytes(b"\xff\xd8\xff garbage")
    monkeypatch.chdir(data)
    before = tree(data)
    code, _, err = run(["check", *[a.format(info=split / "00000_info.json", split=split) for a in extra]], capsys)
    expect_error(code, err, message)
    assert tree(data) == before


# ================================================================================================ build


def _built(data: Path, capsys, name: str = "built") -> Path:
    out = data.parent / name
    code, _, err = run(["build", "--data_dir", data, "--splits", "valid", "--out_dir", out], capsys)
    assert code == 0, err
    return out


def _legacy(data: Path, records: list) -> Path:
    path = data.parent / "legacy_qa.json"
    path.write_text(json.dumps(records))
    return path


GOOD_LEGACY = {"image_file": "valid/00000_00_im.jpg", "question": "What kart is the ego car?", "answer": "tux"}

BUILD_ERRORS = [
    # id, argv after `build --data_dir {data}` (formatted), message regex
    ("out-is-data-dir", ["--out_dir", "{data}", "--overwrite"], "out_dir .* contains the input"),
    ("out-is-a-split", ["--out_dir", "{data}/train", "--overwrite"], "out_dir .* is the same as the input"),
    ("out-inside-a-split", ["--out_dir", "{data}/train/ds", "--overwrite"], "lies inside the input"),
    ("out-is-parent-of-data", ["--out_dir", "{tmp}", "--overwrite"], "contains the input"),
    ("out-is-symlink-to-split", ["--out_dir", "{tmp}/split_link", "--overwrite"], "is the same as the input"),
    ("out-is-foreign-folder", ["--out_dir", "{tmp}/mine", "--overwrite"], "was not written by stk-vqa"),
    ("out-exists-no-overwrite", ["--out_dir", "{tmp}/built"], "already exists"),
    ("out-is-a-file", ["--out_dir", "{tmp}/file.txt", "--overwrite"], "exists and is not a folder"),
    ("out-empty", ["--out_dir", ""], "out_dir: empty"),
    ("max-shard-0B", ["--out_dir", "{tmp}/o", "--max_shard_size", "0B"], "must be more than 0"),
    ("max-shard-1KB", ["--out_dir", "{tmp}/o", "--max_shard_size", "1KB"], "at least 100KB"),
    ("max-shard-words", ["--out_dir", "{tmp}/o", "--max_shard_size", "big"], "cannot read it"),
    ("max-shard-two-dots", ["--out_dir", "{tmp}/o", "--max_shard_size", "1.5.5MB"], "cannot read it"),
    ("max-shard-1e400", ["--out_dir", "{tmp}/o", "--max_shard_size", "1" + "0" * 400 + "GB"], "cannot read it"),
    ("grader-style-text", ["--out_dir", "{tmp}/o", "--grader_style", "abc"], "invalid int value"),
    ("grader-style-negative", ["--out_dir", "{tmp}/o", "--grader_style=-1"], "grader_style: must be"),
    ("grader-style-1e400", ["--out_dir", "{tmp}/o", "--grader_style", "9" * 400], "grader_style: must be"),
    ("splits-duplicated", ["--out_dir", "{tmp}/o", "--splits", "train,train"], "listed twice"),
    ("splits-empty", ["--out_dir", "{tmp}/o", "--splits", ","], "no split folder"),
    ("splits-dotdot", ["--out_dir", "{tmp}/o", "--splits", "train,../data"], "not a split folder path"),
    ("splits-absolute", ["--out_dir", "{tmp}/o", "--splits", "/etc"], "not a split folder path"),
    ("splits-numeric-missing", ["--out_dir", "{tmp}/o", "--splits", "123"], "split folder not found"),
    ("balance-unknown-split", ["--out_dir", "{tmp}/o", "--balance", "--balance_splits", "tain"], "no such split"),
    ("tracks-without-track-split", ["--out_dir", "{tmp}/o", "--validation_tracks", "abyss"], "needs --split_by"),
    ("fraction-nan", ["--out_dir", "{tmp}/o", "--validation_fraction", "nan"], "validation_fraction"),
    ("fraction-1", ["--out_dir", "{tmp}/o", "--validation_fraction", "1"], "validation_fraction"),
    (
        "legacy-split-path",
        ["--out_dir", "{tmp}/o", "--legacy_qa_file", "{tmp}/legacy_qa.json", "--legacy_split", "../x"],
        "legacy_split",
    ),  # fmt: skip
    ("num-proc-0", ["--out_dir", "{tmp}/o", "--num_proc", "0"], "num_proc: must be"),
    ("push-bad-hub-id", ["--out_dir", "{tmp}/o", "--push_to_hub", "--hub_dataset_id", "../x"], "hub_dataset_id"),
    ("unknown-family", ["--out_dir", "{tmp}/o", "--families", "ego"], "unknown question family"),
]


@pytest.mark.parametrize("case, extra, message", BUILD_ERRORS, ids=[c[0] for c in BUILD_ERRORS])
def test_build_refuses(data, capsys, case, extra, message):
    tmp = data.parent
    built = _built(data, capsys)
    (tmp / "split_link").symlink_to(data / "train")
    (tmp / "mine").mkdir()
    (tmp / "mine" / "thesis.tex").write_text("years of work")
    (tmp / "file.txt").write_text("notes")
    _legacy(data, [GOOD_LEGACY])
    before = tree(tmp)
    code, _, err = run(["build", "--data_dir", data, *[a.format(data=data, tmp=tmp) for a in extra]], capsys)
    expect_error(code, err, message)
    assert tree(tmp) == before and (built / MARKER).is_file()


LEGACY_ERRORS = [
    ("absolute-image-file", [{**GOOD_LEGACY, "image_file": "/etc/passwd"}], "not a relative path"),
    ("dotdot-image-file", [{**GOOD_LEGACY, "image_file": "valid/../../secret.jpg"}], "contains '..'"),
    ("home-image-file", [{**GOOD_LEGACY, "image_file": "~/.ssh/id_rsa"}], "not a relative path"),
    ("windows-image-file", [{**GOOD_LEGACY, "image_file": "C:\\x.jpg"}], "not a relative path"),
    ("numeric-family", [{**GOOD_LEGACY, "family": 5}], "field 'family' must be a non-empty string"),
    ("empty-answer", [{**GOOD_LEGACY, "answer": ""}], "field 'answer' missing, empty"),
    ("numeric-answer", [{**GOOD_LEGACY, "answer": 3}], "field 'answer' missing, empty or not a string"),
    ("not-a-list", {"a": 1}, "expected a JSON list"),
    ("item-not-object", ["x"], "item 0: expected an object"),
]


@pytest.mark.parametrize("case, records, message", LEGACY_ERRORS, ids=[c[0] for c in LEGACY_ERRORS])
def test_build_legacy_file_is_validated_and_confined(data, capsys, case, records, message):
    legacy = _legacy(data, records)
    before = tree(data.parent)
    code, _, err = run(
        ["build", "--data_dir", data, "--legacy_qa_file", legacy, "--out_dir", data.parent / "o"], capsys
    )
    expect_error(code, err, message)
    assert tree(data.parent) == before


@pytest.mark.parametrize("payload, message", [("[" * 200_000, "nested too deeply"), ("[1, 2", "not a readable JSON")])
def test_build_legacy_file_unreadable(data, capsys, payload, message):
    legacy = data.parent / "legacy_qa.json"
    legacy.write_text(payload)
    code, _, err = run(
        ["build", "--data_dir", data, "--legacy_qa_file", legacy, "--out_dir", data.parent / "o"], capsys
    )
    expect_error(code, err, message)


def test_build_replaces_only_its_own_output(data, capsys):
    built = _built(data, capsys)
    stamp = (built / "README.md").read_bytes()
    code, _, err = run(["build", "--data_dir", data, "--splits", "train,valid", "--out_dir", built, "--overwrite"],
                       capsys)  # fmt: skip
    assert code == 0, err
    assert (built / MARKER).is_file() and (built / "README.md").read_bytes() != stamp
    assert sorted(p.name for p in built.parent.iterdir() if p.name.startswith(".")) == []


def test_build_labels_views_of_different_sizes_and_blames_no_good_view(data, capsys):
    import datasets

    view1 = data / "valid" / f"{GOOD}_01_im.jpg"
    Image.open(view1).convert("RGB").resize((300, 200)).save(view1)
    out = data.parent / "o"
    code, stdout, err = run(["build", "--data_dir", data, "--splits", "valid", "--out_dir", out], capsys)
    assert code == 0, err
    assert "skipped: 0 bad frame(s), 0 bad image(s)" in stdout
    rows = datasets.load_dataset(str(out), split="validation")
    expected = json.loads(
        (
            lambda: (
                run(["generate", "--data_dir", data, "--data_split", "valid"], capsys),
                (data / "valid" / "generated_qa_pairs.json").read_text(),
            )[1]
        )()  # fmt: skip
    )
    assert sorted(zip(rows["image_file"], rows["question"], rows["answer"])) == sorted(
        (r["image_file"], r["question"], r["answer"]) for r in expected
    )


def test_build_yaml_values_are_typed(data, capsys, tmp_path):
    before = tree(data)
    for text, message in [
        ("splits: 123\n", r"field 'splits': expected str, got 123 \(quote it"),
        ("data_split: 1\n", r"unknown field"),
        ("seed: yes\n", r"field 'seed': expected int, got True"),
        ("overwrite: 1\n", r"field 'overwrite': expected bool"),
        ("out_dir: [a]\n", r"field 'out_dir': expected str"),
        ("- a\n", "must be a YAML mapping"),
        ("a: [" * 5000 + "]" * 5000 + "\n", "valid YAML"),
        ("a: b: c\n", "not valid YAML"),
    ]:
        config = tmp_path / "build.yaml"
        config.write_text(text)
        code, _, err = run(["build", config, "--data_dir", data, "--out_dir", tmp_path / "o"], capsys)
        expect_error(code, err, message)
    assert tree(data) == before and not (tmp_path / "o").exists()


def test_build_ctrl_c_leaves_the_previous_output(data, capsys, monkeypatch):
    import stk_vqa.data.builder as builder

    built = _built(data, capsys)
    before = tree(data.parent)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(builder, "write_split", interrupted)
    code, _, err = run(["build", "--data_dir", data, "--splits", "valid", "--out_dir", built, "--overwrite"], capsys)
    assert code == 130 and err.strip() == f"interrupted (Ctrl-C): {built} left as it was (no partial output)"
    assert tree(data.parent) == before


def test_build_counts_unreadable_images_and_names_them_with_strict(data, capsys):
    (data / "valid" / f"{GOOD}_03_im.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = data.parent / "o"
    code, stdout, err = run(["build", "--data_dir", data, "--splits", "valid", "--out_dir", out], capsys)
    assert code == 0, err
    assert "1 bad image(s)" in stdout
    code, _, err = run(["build", "--data_dir", data, "--splits", "valid", "--out_dir", data.parent / "s", "--strict"],
                       capsys)  # fmt: skip
    expect_error(code, err, f"{GOOD}_03_im.jpg: field '<image>'")


# ================================================================================================ preview


@pytest.mark.parametrize(
    "case, extra, message",
    [
        ("out-is-dataset", ["--out_dir", "{built}"], "is the same as the input"),
        ("out-inside-dataset", ["--out_dir", "{built}/data"], "lies inside the input"),
        ("out-is-data-dir", ["--out_dir", "{data}", "--data_dir", "{data}"], "is the same as the input"),
        ("out-is-foreign-folder", ["--out_dir", "{tmp}/mine"], "was not written by stk-vqa"),
        ("num-rows-0", ["--num_rows", "0"], "num_rows: must be 1 to"),
        ("columns-0", ["--columns", "0"], "columns: must be 1 to"),
        ("missing-split", ["--split", "nope"], "cannot load it"),
        ("missing-dataset", ["--dataset", "{tmp}/nope"], "cannot load|not loadable"),
    ],
)
def test_preview_refuses(data, capsys, case, extra, message):
    tmp = data.parent
    built = _built(data, capsys)
    (tmp / "mine").mkdir()
    (tmp / "mine" / "index.html").write_text("my homepage")
    before = tree(tmp)
    argv = ["preview", built, "--out_dir", tmp / "p", *[a.format(built=built, data=data, tmp=tmp) for a in extra]]
    code, _, err = run(argv, capsys)
    expect_error(code, err, message)
    assert tree(tmp) == before


def test_preview_replaces_its_own_output(data, capsys):
    built = _built(data, capsys)
    out = data.parent / "p"
    for _ in range(2):
        code, _, err = run(["preview", built, "--out_dir", out, "--num_rows", "2"], capsys)
        assert code == 0, err
    assert (out / MARKER).is_file() and (out / "index.html").is_file()


# ================================================================================================ evaluate / test / ask


@pytest.fixture()
def adapter(tmp_path, trained_color_adapter_dir) -> Path:
    """A private copy of the trained colour adapter (cases damage it)."""
    return Path(shutil.copytree(trained_color_adapter_dir, tmp_path / "adapter"))


def _truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


EVAL_ERRORS = [
    # id, damage(adapter folder, tmp), argv after `evaluate --data {data} --model {model}`, message
    (
        "out-is-adapter",
        None,
        ["--adapters", "{adapter}", "--out_dir", "{adapter}", "--overwrite"],
        "is the same as the input",
    ),
    ("out-holds-adapter", None, ["--adapters", "{adapter}", "--out_dir", "{tmp}", "--overwrite"], "contains the input"),
    ("out-is-dataset", None, ["--out_dir", "{data}", "--overwrite"], "is the same as the input"),
    ("out-inside-dataset", None, ["--out_dir", "{data}/data", "--overwrite"], "lies inside the input"),
    ("out-is-model", None, ["--out_dir", "{model}", "--overwrite"], "is the same as the input"),
    ("out-is-foreign-folder", None, ["--out_dir", "{tmp}/mine", "--overwrite"], "was not written by stk-vqa"),
    ("out-exists", None, ["--out_dir", "{tmp}/mine"], "already exists"),
    (
        "truncated-adapter-weights",
        lambda a: _truncate(a / "adapter_model.safetensors"),
        ["--adapters", "{adapter}"],
        "adapter_model.safetensors is truncated",
    ),  # fmt: skip
    (
        "empty-adapter-weights",
        lambda a: _truncate(a / "adapter_model.safetensors", 0),
        ["--adapters", "{adapter}"],
        "adapter_model.safetensors is empty",
    ),  # fmt: skip
    (
        "garbage-adapter-weights",
        lambda a: (a / "adapter_model.safetensors").write_bytes(b"\xff" * 64),
        ["--adapters", "{adapter}"],
        "adapter_model.safetensors is truncated or not a safetensors file",
    ),  # fmt: skip
    (
        "no-adapter-weights",
        lambda a: (a / "adapter_model.safetensors").unlink(),
        ["--adapters", "{adapter}"],
        "has no adapter_model.safetensors",
    ),  # fmt: skip
    (
        "adapter-config-garbage",
        lambda a: (a / "adapter_config.json").write_text("{"),
        ["--adapters", "{adapter}"],
        "adapter_config.json: not a readable JSON file",
    ),  # fmt: skip
    (
        "adapter-config-deep",
        lambda a: (a / "adapter_config.json").write_text("[" * 100_000 + "]" * 100_000),
        ["--adapters", "{adapter}"],
        "adapter_config.json: not a readable JSON file",
    ),  # fmt: skip
    ("batch-size-0", None, ["--batch_size", "0"], "batch_size: must be 1 to"),
    ("max-samples-0", None, ["--max_samples", "0"], "max_samples: must be at least 1"),
    ("max-new-tokens-0", None, ["--max_new_tokens", "0"], "max_new_tokens: must be 1 to"),
    ("device-foo", None, ["--device", "foo"], "--device 'foo'"),
    ("dtype-int8", None, ["--dtype", "int8"], "--dtype 'int8'"),
    ("missing-split", None, ["--split", "nope", "--no_prior"], "no split 'nope'"),
    ("title-number-ok-split-missing", None, ["--title", "5", "--split", "0", "--no_prior"], "no split '0'"),
]


@pytest.mark.parametrize("case, damage, extra, message", EVAL_ERRORS, ids=[c[0] for c in EVAL_ERRORS])
def test_evaluate_refuses(tmp_path, capsys, adapter, tiny_model_dir, color_chat_dataset_dir, case, damage, extra,
                          message):  # fmt: skip
    data = Path(shutil.copytree(color_chat_dataset_dir, tmp_path / "ds"))
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("mine")
    if damage:
        damage(adapter)
    before = tree(tmp_path)
    argv = ["evaluate", "--data", data, "--model", model, "--out_dir", tmp_path / "report"]
    argv += [a.format(adapter=adapter, data=data, model=model, tmp=tmp_path) for a in extra]
    code, _, err = run(argv, capsys)
    expect_error(code, err, message)
    assert tree(tmp_path) == before


def test_evaluate_legacy_json_paths_are_confined(tmp_path, capsys, data, tiny_model_dir):
    secret = tmp_path / "secret.jpg"
    Image.new("RGB", (8, 8)).save(secret)
    for image_file in (str(secret), "../secret.jpg", "valid/../../secret.jpg"):
        legacy = data / "valid_grader" / "qa.json"
        legacy.parent.mkdir(exist_ok=True)
        legacy.write_text(json.dumps([{**GOOD_LEGACY, "image_file": image_file}]))
        code, _, err = run(["evaluate", "--data", legacy, "--model", tiny_model_dir, "--out_dir", tmp_path / "r"],
                           capsys)  # fmt: skip
        expect_error(code, err, "field 'image_file'")
    assert not (tmp_path / "r").exists()


def test_evaluate_with_every_image_unreadable_writes_no_report(tmp_path, capsys, data, tiny_model_dir):
    (data / "valid" / "00000_00_im.jpg").write_bytes(b"garbage")
    legacy = data / "valid_grader" / "qa.json"
    legacy.parent.mkdir()
    legacy.write_text(json.dumps([GOOD_LEGACY]))
    code, _, err = run(["evaluate", "--data", legacy, "--model", tiny_model_dir, "--out_dir", tmp_path / "r",
                        "--device", "cpu"], capsys)  # fmt: skip
    expect_error(code, err, "no image could be opened .* not written")
    assert not (tmp_path / "r").exists()


def test_test_command_writes_inside_the_adapter_but_never_over_it(tmp_path, capsys, adapter, tiny_model_dir,
                                                                 color_chat_dataset_dir):  # fmt: skip
    before = tree(adapter)
    argv = ["test", adapter, "--data", color_chat_dataset_dir, "--model", tiny_model_dir, "--device", "cpu",
            "--max_samples", "2", "--no_prior"]  # fmt: skip
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert (adapter / "eval" / "report.md").is_file()
    assert {k: v for k, v in tree(adapter).items() if not k.startswith("eval")} == before
    code, _, err = run([*argv, "--out_dir", adapter, "--overwrite"], capsys)
    expect_error(code, err, "is the same as the input")


@pytest.mark.parametrize(
    "case, extra, message",
    [
        ("corrupt-image", ["{tmp}/bad.jpg", "What?"], "bad.jpg: UnidentifiedImageError"),
        ("missing-image", ["{tmp}/nope.jpg", "What?"], "nope.jpg"),
        ("empty-question", ["{tmp}/ok.png", " "], "an image and a question are required"),
        ("max-new-tokens-0", ["{tmp}/ok.png", "What?", "--max_new_tokens", "0"], "max_new_tokens: must be"),
        ("truncated-adapter", ["{tmp}/ok.png", "What?", "--adapter", "{adapter}"], "is truncated"),
    ],
)
def test_ask_refuses(tmp_path, capsys, adapter, tiny_model_dir, case, extra, message):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    _truncate(adapter / "adapter_model.safetensors")
    argv = ["ask", *[a.format(tmp=tmp_path, adapter=adapter) for a in extra], "--model", tiny_model_dir]
    code, _, err = run(argv, capsys)
    expect_error(code, err, message)


# ================================================================================================ train


def _recipe(tiny_model_dir, dataset, output_dir, *extra) -> list[str]:
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "smoke_cpu.yaml"
    return ["train", str(recipe), "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(dataset),
            "--output_dir", str(output_dir), "--report_to", "none", "--loss_curve", "false", *map(str, extra)]  # fmt: skip


def _fake_checkpoint(folder: Path, step: int, good: bool = True) -> Path:
    """A checkpoint folder with the files a LoRA run saves (tiny but well-formed)."""
    import torch
    from safetensors.torch import save_file

    ckpt = folder / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    save_file({"w": torch.zeros(64)}, str(ckpt / "adapter_model.safetensors"))
    torch.save({"state": {0: torch.zeros(256)}}, ckpt / "optimizer.pt")
    (ckpt / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    return ckpt


TRAIN_ERRORS = [
    # id, setup(run folder, tmp), argv extra after the recipe, message, exit code
    ("earlier-run", lambda r, t: _fake_checkpoint(r, 10), [], "holds an earlier run .*--resume_from_checkpoint", 2),
    ("output-is-dataset", None, ["--output_dir", "{data}"], "output_dir .* is the same as the input", 2),
    ("output-inside-dataset", None, ["--output_dir", "{data}/run"], "lies inside the input", 2),
    ("output-is-model", None, ["--output_dir", "{model}"], "is the same as the input", 2),
    ("output-is-recipe-folder", None, ["--output_dir", "{recipes}"], "contains the input", 2),
    ("output-is-a-file", lambda r, t: (t / "f").write_text("x"), ["--output_dir", "{tmp}/f"], "is not a folder", 2),
    (
        "output-foreign-folder",
        lambda r, t: (r.mkdir(), (r / "notes.md").write_text("x")),
        [],
        "non-empty folder that no training run made",
        2,
    ),  # fmt: skip
    (
        "overwrite-foreign-folder",
        lambda r, t: (r.mkdir(), (r / "notes.md").write_text("x")),
        ["--overwrite_output_dir", "true"],
        "non-empty folder that no training run made",
        2,
    ),  # fmt: skip
    (
        "resume-newest-truncated-only",
        lambda r, t: _truncate(_fake_checkpoint(r, 10) / "optimizer.pt"),
        ["--resume_from_checkpoint", "last"],
        "no complete checkpoint",
        2,
    ),  # fmt: skip
    (
        "resume-explicit-truncated",
        lambda r, t: _truncate(_fake_checkpoint(r, 10) / "trainer_state.json"),
        ["--resume_from_checkpoint", "{run}/checkpoint-10"],
        "cannot be resumed: trainer_state.json cannot be read",
        2,
    ),  # fmt: skip
    ("resume-explicit-missing", None, ["--resume_from_checkpoint", "{tmp}/nope"], "is not a checkpoint folder", 2),
    ("image-size-0", None, ["--image_size", "0"], "field 'image_size': must be", 2),
    ("max-train-samples-0", None, ["--max_train_samples", "0"], "field 'max_train_samples': must be", 2),
    ("lora-scope-bad", None, ["--lora_scope", "vision"], "invalid choice", 2),
    ("bad-training-image", "bad-image", [], r"split 'train', row 3 \(image .*\): cannot be decoded", 2),
]


def _dataset_with_a_bad_image(src: Path, dst: Path) -> Path:
    import datasets

    shutil.copytree(src, dst)
    shard = next((dst / "data").glob("train-*.parquet"))
    ds = datasets.Dataset.from_parquet(str(shard))
    features = ds.features.copy()
    ds = ds.cast_column("images", datasets.Sequence(datasets.Image(decode=False)))
    rows = ds.to_list()
    rows[3]["images"] = [{"bytes": b"\xff\xd8\xff\xe0 truncated jpeg", "path": "synthetic/bad_00_im.jpg"}]
    bad = datasets.Dataset.from_list(rows, features=ds.features).cast(features)
    bad.to_parquet(str(shard))
    return dst


@pytest.mark.parametrize("case, setup, extra, message, exit_code", TRAIN_ERRORS, ids=[c[0] for c in TRAIN_ERRORS])
def test_train_refuses(tmp_path, capsys, tiny_model_dir, color_chat_dataset_dir, case, setup, extra, message,
                       exit_code):  # fmt: skip
    data = Path(shutil.copytree(color_chat_dataset_dir, tmp_path / "ds"))
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    run_dir = tmp_path / "run"
    if setup == "bad-image":
        shutil.rmtree(data)
        _dataset_with_a_bad_image(color_chat_dataset_dir, data)
    elif setup:
        setup(run_dir, tmp_path)
    before = tree(tmp_path)
    recipes = Path(__file__).resolve().parents[1] / "recipes"
    fmt = dict(data=data, model=model, tmp=tmp_path, run=run_dir, recipes=recipes)
    code, _, err = run([*_recipe(model, data, run_dir, "--max_steps", "1"), *[a.format(**fmt) for a in extra]], capsys)
    expect_error(code, err, message, exit_code)
    assert tree(tmp_path) == before


def test_resume_falls_back_to_the_newest_checkpoint_whose_files_load(tmp_path, caplog):
    from stk_vqa.training.configs import _resolve_resume

    run_dir = tmp_path / "run"
    _fake_checkpoint(run_dir, 10)
    for step, damage in ((20, "optimizer.pt"), (30, "adapter_model.safetensors"), (40, "trainer_state.json")):
        _truncate(_fake_checkpoint(run_dir, step) / damage)
    (_fake_checkpoint(run_dir, 50) / "optimizer.pt").write_bytes(b"")

    class Args:
        resume_from_checkpoint = "last"
        output_dir = str(run_dir)

    assert _resolve_resume(Args) == str(run_dir / "checkpoint-10")
    skipped = [r.getMessage() for r in caplog.records if "skipping checkpoint" in r.getMessage()]
    assert len(skipped) == 4 and "optimizer.pt is empty" in skipped[0]


def test_overwrite_output_dir_replaces_only_a_training_run(tmp_path):
    from stk_vqa.training.artifacts import prepare_output_dir

    run_dir = tmp_path / "run"
    _fake_checkpoint(run_dir, 10)
    prepare_output_dir(str(run_dir), overwrite=True)
    assert sorted(p.name for p in run_dir.iterdir()) == [MARKER]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_train_ctrl_c_says_what_was_saved(tmp_path, capsys, tiny_model_dir, color_chat_dataset_dir, monkeypatch):
    from stk_vqa.training.trainer import StkSFTTrainer

    def interrupted(self, *args, **kwargs):
        _fake_checkpoint(tmp_path / "run", 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(StkSFTTrainer, "train", interrupted)
    code, _, err = run(_recipe(tiny_model_dir, color_chat_dataset_dir, tmp_path / "run", "--max_steps", "1"), capsys)
    assert code == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"interrupted (Ctrl-C): newest complete checkpoint: {tmp_path / 'run' / 'checkpoint-2'} "
        "(continue with --resume_from_checkpoint last)"
    )


def test_real_resume_skips_a_truncated_checkpoint(tmp_path, capsys, tiny_model_dir, color_chat_dataset_dir):
    run_dir = tmp_path / "run"
    argv = _recipe(tiny_model_dir, color_chat_dataset_dir, run_dir, "--max_steps", "4", "--save_steps", "2",
                   "--save_total_limit", "3", "--vision_feature_reuse", "false")  # fmt: skip
    code, _, err = run(argv, capsys)
    assert code == 0, err
    _truncate(run_dir / "checkpoint-4" / "optimizer.pt")
    code, _, err = run([*argv[:-8], "--max_steps", "6", "--resume_from_checkpoint", "last"], capsys)
    assert code == 0, err
    assert (run_dir / "checkpoint-6").is_dir()


# ================================================================================================ make-tiny-model, quickstart


@pytest.mark.parametrize(
    "case, extra, message",
    [
        ("overwrite-foreign-folder", ["{tmp}/mine", "--overwrite"], "was not written by stk-vqa"),
        ("exists", ["{tmp}/mine"], "already exists"),
        ("image-size-0", ["{tmp}/m", "--image_size", "0"], "--image_size 0"),
        ("image-size-odd", ["{tmp}/m", "--image_size", "100"], "must be a multiple"),
        ("size-unknown", ["{tmp}/m", "--size", "huge"], "--size 'huge'"),
        ("seed-negative", ["{tmp}/m", "--seed=-1"], "--seed -1"),
    ],
)
def test_make_tiny_model_refuses(tmp_path, capsys, case, extra, message):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "weights.bin").write_bytes(b"precious")
    before = tree(tmp_path)
    code, _, err = run(["make-tiny-model", *[a.format(tmp=tmp_path) for a in extra]], capsys)
    expect_error(code, err, message)
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    "case, extra, message",
    [
        ("work-dir-is-data", ["--data_dir", "{data}", "--work_dir", "{data}"], "work_dir .* is the same as the input"),
        ("work-dir-inside-data", ["--data_dir", "{data}", "--work_dir", "{data}/q"], "lies inside the input"),
        ("work-dir-holds-recipe", ["--recipe", "{tmp}/r.yaml", "--work_dir", "{tmp}"], "contains the input"),
        ("max-eval-samples-0", ["--max_eval_samples", "0"], "max_eval_samples: must be"),
    ],
)
def test_quickstart_refuses(tmp_path, capsys, data, case, extra, message):
    shutil.copy(Path(__file__).resolve().parents[1] / "recipes" / "quickstart_cpu.yaml", tmp_path / "r.yaml")
    before = tree(tmp_path)
    code, _, err = run(["quickstart", *[a.format(tmp=tmp_path, data=data) for a in extra]], capsys)
    expect_error(code, err, message)
    assert tree(tmp_path) == before


# ================================================================================================ fileio


def test_weights_file_problem_reads_headers_only(tmp_path):
    import torch
    from safetensors.torch import save_file

    from stk_vqa.fileio import weights_file_problem

    save_file({"w": torch.zeros(1000)}, str(tmp_path / "a.safetensors"))
    torch.save({"x": torch.zeros(1000)}, tmp_path / "o.pt")
    assert weights_file_problem(tmp_path / "a.safetensors") is None and weights_file_problem(tmp_path / "o.pt") is None
    for name in ("a.safetensors", "o.pt"):
        _truncate(tmp_path / name)
        assert "truncated" in weights_file_problem(tmp_path / name) or "corrupt" in weights_file_problem(
            tmp_path / name
        )
    (tmp_path / "h.safetensors").write_bytes((10**6).to_bytes(8, "little") + b"{}")
    assert "truncated" in weights_file_problem(tmp_path / "h.safetensors")


def test_a_fifo_named_like_an_input_never_blocks(data, capsys):
    split = data / "train"
    os.mkfifo(split / "00009_info.json")
    (split / f"{GOOD}_01_im.jpg").unlink()
    os.mkfifo(split / f"{GOOD}_01_im.jpg")
    code, out, err = run(["generate", "--data_dir", data, "--data_split", "train"], capsys)
    assert code == 0, err
    assert "1 skipped (bad input), 1 unreadable image(s) skipped" in out


@pytest.mark.parametrize(
    "text, message",
    [
        ("dataset_name: 123\n", r"field 'dataset_name': expected a string, got 123 \(quote it"),
        ("model_name_or_path: [a, b]\n", "field 'model_name_or_path': expected one string, got a list"),
        ("max_steps: many\n", "field 'max_steps': expected int"),
        ("lora_scope: vision\n", "field 'lora_scope': 'vision' is not one of"),
        ("learning_rate: [1, 2]\n", "field 'learning_rate': expected one value"),
        ("bogus_field: 1\n", "unknown field 'bogus_field'"),
        ("- a\n", "must be a YAML mapping"),
    ],
)
def test_train_recipe_values_are_typed(tmp_path, capsys, text, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    code, _, err = run(["train", recipe, "--output_dir", tmp_path / "o"], capsys)
    expect_error(code, err, message, 2)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["build", "--data_dir", "{data}", "--splits", "valid", "--out_dir", "{tmp}/o\nx"], "control characters"),
        (["make-tiny-model", ""], "out_dir: empty path"),
        (
            ["generate", "--data_dir", "{data}", "--data_split", "valid", "--output_file", "{tmp}/a\tb.json"],
            "control characters",
        ),  # fmt: skip
        (["build", "{tmp}"], "Is a directory"),
    ],
)
def test_output_paths_are_spelled_sanely(data, capsys, argv, message):
    (data.parent / "cfg.yaml").mkdir()
    before = tree(data.parent)
    argv = [a.format(data=data, tmp=data.parent) if a != "{tmp}" else data.parent / "cfg.yaml" for a in argv]
    code, _, err = run(argv, capsys)
    expect_error(code, err, message)
    assert tree(data.parent) == before
