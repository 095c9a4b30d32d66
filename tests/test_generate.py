"""Split-level QA generation and the ``generate`` / ``check`` commands."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from stk_vqa.data.generate import GenerationSummary, iter_split_qa, qa_records, scan_split
from stk_vqa.data.info_file import InfoFileError


@pytest.fixture()
def valid_split(tmp_path, reference_info_dir) -> Path:
    split = tmp_path / "data" / "valid"
    split.mkdir(parents=True)
    for f in reference_info_dir.glob("*_info.json"):
        shutil.copy(f, split / f.name)
    return split


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "stk_vqa.cli", *args], capture_output=True, text=True, cwd=cwd, check=False
    )


def test_generate_command_on_info_files_only(valid_split):
    data_dir = valid_split.parent
    result = run_cli("generate", "--data_split", "valid", "--data_dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    records = json.loads((valid_split / "generated_qa_pairs.json").read_text())
    assert "frames: 6 read, 0 skipped" in result.stdout
    assert records[0] == {
        "image_file": "valid/00000_00_im.jpg",
        "question": "What kart is the ego car?",
        "answer": "gnu",
        "family": "ego_kart",
    }
    assert {r["image_file"].split("/")[0] for r in records} == {"valid"}
    frames = sorted({r["image_file"][6:11] for r in records})
    assert frames == ["00000", "00001", "0001a", "00040", "00052", "00075"]
    # 60 views with at least one kart each in these frames: ego/count/track once per view
    assert sum(r["family"] == "ego_kart" for r in records) == 60


def test_generate_does_not_import_torch(valid_split):
    code = (
        "import sys; from stk_vqa.cli import main; "
        f"main(['generate', '--data_split', 'valid', '--data_dir', {str(valid_split.parent)!r}, '--progress', 'False']); "
        "assert 'torch' not in sys.modules and 'datasets' not in sys.modules and 'transformers.modeling_utils' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_families_flag_adds_extensions(valid_split):
    result = run_cli(
        "generate", "--data_split", "valid", "--data_dir", str(valid_split.parent), "--families", "default,ego_speed"
    )
    assert result.returncode == 0, result.stderr
    records = json.loads((valid_split / "generated_qa_pairs.json").read_text())
    assert sum(r["family"] == "ego_speed" for r in records) == 60


def test_image_size_read_from_images(valid_split):
    # 600x400 images: no scaling, so the small karts of 00000 view 1 are kept
    frame_files = [f for f in scan_split(valid_split) if f.frame_id == "00000"]
    for v in range(10):
        Image.new("RGB", (600, 400)).save(valid_split / f"00000_{v:02d}_im.jpg")
    frames = list(iter_split_qa(valid_split, progress=False))
    first = frames[0]
    assert first.frame_id == "00000" and first.image_size == (600, 400)
    view1 = {p.question: p.answer for p in first.views[1].pairs}
    assert view1["How many karts are there in the scenario?"] == "3"
    assert frame_files[0].image_views == ()


def test_view_count_mismatch_is_an_error(valid_split):
    for v in range(3):  # 3 images for a 10-view frame
        Image.new("RGB", (150, 100)).save(valid_split / f"00001_{v:02d}_im.jpg")
    with pytest.raises(InfoFileError, match=r"00001_info.json: field 'detections': has 10 views"):
        list(iter_split_qa(valid_split, strict=True, progress=False))
    summary = GenerationSummary()
    frames = list(iter_split_qa(valid_split, summary=summary, progress=False))
    assert summary.skipped == 1 and len(frames) == 5
    assert "00001" not in {f.frame_id for f in frames}


def test_bad_frames_skipped_and_counted_or_strict_error(valid_split):
    (valid_split / "00003_info.json").write_text("{not json")
    data = json.loads((valid_split / "00000_info.json").read_text())
    data["detections"][2][0][1] = 99
    (valid_split / "00004_info.json").write_text(json.dumps(data))
    result = run_cli("generate", "--data_split", "valid", "--data_dir", str(valid_split.parent))
    assert result.returncode == 0
    assert "frames: 8 read, 2 skipped" in result.stdout
    assert "00003_info.json" in result.stderr and "00004_info.json" in result.stderr
    strict = run_cli("generate", "--data_split", "valid", "--data_dir", str(valid_split.parent), "--strict")
    assert strict.returncode != 0
    assert "00003_info.json: field '<json>': malformed JSON" in strict.stderr


def test_parallel_equals_serial(valid_split, reference_info_dir):
    # 60 frames: copies of the reference under new ids
    for i, f in enumerate(sorted(reference_info_dir.glob("*_info.json")) * 9):
        shutil.copy(f, valid_split / f"{0x100 + i:05x}_info.json")
    serial = qa_records(iter_split_qa(valid_split, num_workers=1, progress=False))
    parallel = qa_records(iter_split_qa(valid_split, num_workers=2, progress=False))
    assert serial == parallel and len(serial) > 5000


def test_check_command_prints_scene_and_saves_png(valid_split, tmp_path):
    Image.new("RGB", (150, 100), (10, 120, 10)).save(valid_split / "00000_00_im.jpg")
    out = tmp_path / "check.png"
    result = run_cli(
        "check", "--info_file", str(valid_split / "00000_info.json"), "--view_index", "0", "--output_file", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "EGO" in result.stdout and "gnu" in result.stdout
    assert "[left_right] Is beastie to the left or right of the ego car? -> right" in result.stdout
    image = Image.open(out)
    assert image.size == (600, 400)
    # the ego's box (63,36)-(86,59) is drawn in red at 4x
    assert image.getpixel((63 * 4, 45 * 4))[0] > 200


def test_unknown_family_fails_fast(valid_split):
    result = run_cli("generate", "--data_split", "valid", "--data_dir", str(valid_split.parent), "--families", "bogus")
    assert result.returncode != 0 and "unknown question family 'bogus'" in result.stderr


def test_written_json_is_the_standard_librarys_indent_2_format(valid_split):
    """orjson writes the file; the bytes are what ``json.dumps(records, indent=2)`` (+ a newline) would write."""
    result = run_cli("generate", "--data_split", "valid", "--data_dir", str(valid_split.parent), "--progress", "false")
    assert result.returncode == 0, result.stderr
    written = (valid_split / "generated_qa_pairs.json").read_text()
    assert written == json.dumps(json.loads(written), indent=2) + "\n"
