"""Rendering (issue 7): the bundled sample's layout and content, and the renderer's pieces that need no game.

The one test that runs the game is marked ``render`` (deselected by default; ``pytest -m render``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import stk_vqa
from stk_vqa.questions import generate_view_qa
from stk_vqa.render import frame_writer
from stk_vqa.render.cli import plan_races
from stk_vqa.render.game_data import GameNotInstalled, check_installed, prepare_datadir
from stk_vqa.scene import load_frame

SAMPLE_DIR = Path(stk_vqa.__file__).parent / "data" / "sample"
COURSE_KEYS = ["track", "karts", "detections", "distance_down_track", "velocity"]
INFO_NAME = re.compile(r"^[0-9a-f]{5}_info\.json$")


def sample_info_files() -> list[Path]:
    return sorted(SAMPLE_DIR.glob("*/*_info.json"))


def test_sample_is_in_the_course_layout():
    files = sample_info_files()
    assert len(files) >= 20, "the bundled sample should hold 20+ frames"
    assert {p.parent.name for p in files} <= {"train", "valid"}
    tracks = set()
    for path in files:
        assert INFO_NAME.match(path.name), path
        info = json.loads(path.read_text())
        assert list(info)[: len(COURSE_KEYS)] == COURSE_KEYS, path
        n_karts, n_views = len(info["karts"]), len(info["detections"])
        assert n_views >= 2 and n_karts >= n_views
        assert len(info["distance_down_track"]) == n_karts and len(info["velocity"]) == n_karts
        assert all(len(v) == 3 and all(np.isfinite(v)) for v in info["velocity"])
        frame = path.name[:5]
        images = sorted(path.parent.glob(f"{frame}_*_im.jpg"))
        assert [p.name for p in images] == [f"{frame}_{v:02d}_im.jpg" for v in range(n_views)], path
        assert info["box_method"] in {"none", "geometry", "instance"}
        tracks.add(info["track"])
    assert len(tracks) >= 3, "the sample should cover several tracks"


def test_sample_boxes_lie_in_600x400_space():
    for path in sample_info_files():
        info = json.loads(path.read_text())
        for view in info["detections"]:
            for class_id, instance_id, x1, y1, x2, y2 in view:
                assert 0 <= x1 <= x2 < 600 and 0 <= y1 <= y2 < 400, path
                if class_id == 1:
                    assert 0 <= instance_id < len(info["karts"])


def test_sample_parses_and_labels_follow_its_boxes():
    """The lead's parser accepts every frame; QA pairs exist exactly where kart boxes exist (none invented)."""
    for path in sample_info_files():
        frame = load_frame(path)
        info = json.loads(path.read_text())
        assert frame.num_views == len(info["detections"])
        for view in range(frame.num_views):
            pairs = generate_view_qa(frame, view, image_size=tuple(info["image_size"]))
            has_kart_box = any(det[0] == 1 for det in info["detections"][view])
            if not has_kart_box:
                assert pairs == [], f"{path} view {view}: labels without boxes"
            if info["box_method"] == "none":
                assert not has_kart_box


def test_sample_images_are_real_renders():
    stds, means = [], []
    for path in sample_info_files():
        info = json.loads(path.read_text())
        views = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32)
                 for p in sorted(path.parent.glob(f"{path.name[:5]}_*_im.jpg"))]
        for pixels in views:
            assert pixels.shape == (info["image_size"][1], info["image_size"][0], 3)
            stds.append(pixels.std())
            means.append(pixels.mean())
        # each view is its own camera: no two views of a frame are the same picture
        for a in range(len(views)):
            for b in range(a + 1, len(views)):
                assert np.abs(views[a] - views[b]).mean() > 2.0, path
    assert min(stds) > 15.0, "a view is (nearly) flat: not a render"
    assert 20 < float(np.median(means)) < 235


def _fake_game_data(root: Path) -> Path:
    data = root / "debian_data"
    for track in ("abyss", "lighthouse"):
        (data / "tracks" / track).mkdir(parents=True)
        (data / "tracks" / track / "track.xml").write_text("<track/>")
    (data / "tracks" / "overworld").mkdir()  # not a course race track
    for kart in ("tux", "gnu", "xue"):
        (data / "karts" / kart).mkdir(parents=True)
        (data / "karts" / kart / "kart.xml").write_text("<kart/>")
    for skin in ("peach", "coal"):
        (data / "skins" / skin).mkdir(parents=True)
    (data / "supertuxkart.1.4").write_text("")
    return data


def test_plan_races_gives_unique_stable_frame_ids(tmp_path):
    data = _fake_game_data(tmp_path)
    specs = plan_races("lighthouse,abyss", frames=3, views=2, karts=5, seed=7, data_dir=data)
    ids = [spec.first_frame + i for spec in specs for i in range(spec.frames)]
    assert ids == list(range(6))
    assert [s.track for s in specs] == ["lighthouse", "abyss"]
    assert all(len(s.karts) == 5 and set(s.karts) <= {"tux", "gnu", "xue"} for s in specs)
    again = plan_races(["lighthouse", "abyss"], frames=3, views=2, karts=5, seed=7, data_dir=data)
    assert [(s.karts, s.seed) for s in again] == [(s.karts, s.seed) for s in specs]
    other = plan_races("lighthouse,abyss", frames=3, views=2, karts=5, seed=8, data_dir=data)
    assert [(s.karts, s.seed) for s in other] != [(s.karts, s.seed) for s in specs]


def test_unknown_names_list_the_valid_ones(tmp_path):
    data = _fake_game_data(tmp_path)
    with pytest.raises(ValueError, match=r"unknown track 'overworld'.*valid tracks: abyss, lighthouse"):
        plan_races("overworld", frames=1, views=1, karts=1, seed=0, data_dir=data)
    with pytest.raises(ValueError, match=r"unknown kart 'beastie'.*valid karts: gnu, tux, xue"):
        plan_races("abyss", frames=1, views=1, karts=1, seed=0, kart_names="beastie", data_dir=data)
    with pytest.raises(ValueError, match="views"):
        plan_races("abyss", frames=1, views=3, karts=2, seed=0, data_dir=data)


def test_missing_game_says_what_to_install(tmp_path):
    with pytest.raises(GameNotInstalled, match="apt-get install -y supertuxkart-data"):
        check_installed(tmp_path / "no_such_data")


def test_prepare_datadir_links_debian_assets(tmp_path):
    data = _fake_game_data(tmp_path)
    root = prepare_datadir(tmp_path / "cache", data_dir=data)
    assert (root / "data" / "supertuxkart.1.5").is_file()
    assert (root / "data" / "tracks" / "abyss" / "track.xml").is_file()
    assert (root / "data" / "skins" / "classic").resolve() == (data / "skins" / "peach").resolve()
    assert prepare_datadir(tmp_path / "cache", data_dir=data) == root  # idempotent


def test_write_frame_is_complete_and_atomic(tmp_path):
    images = [np.random.default_rng(v).integers(0, 255, (100, 150, 3), dtype=np.uint8) for v in range(2)]
    state = {"distance_down_track": [1.0, 2.0], "velocity": [[0, 0, 1], [0, 0, 2]], "kart_location": [[0, 0, 0]] * 2}
    info = frame_writer.build_info("abyss", ["tux", "gnu"], 2, state, {"seed": 3})
    assert not frame_writer.is_complete(tmp_path, 10, 2)
    frame_writer.write_frame(tmp_path, 10, images, info)
    assert frame_writer.is_complete(tmp_path, 10, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0000a_00_im.jpg", "0000a_01_im.jpg", "0000a_info.json"]
    saved = json.loads((tmp_path / "0000a_info.json").read_text())
    assert list(saved)[:5] == COURSE_KEYS and saved["seed"] == 3 and saved["detections"] == [[], []]
    assert load_frame(tmp_path / "0000a_info.json").num_views == 2


@pytest.mark.render
def test_render_one_frame_two_views(tmp_path):
    try:
        check_installed()
    except GameNotInstalled as missing:
        pytest.skip(str(missing))
    from stk_vqa.render.cli import render

    result = render(out=str(tmp_path), split="valid", tracks="lighthouse", frames=1, views=2, karts=3, seed=0,
                    warmup_steps=60, step_interval=5, stall_timeout=300)
    assert result is None  # nothing lost
    info = json.loads((tmp_path / "valid" / "00000_info.json").read_text())
    assert info["track"] == "lighthouse" and len(info["karts"]) == 3 and len(info["detections"]) == 2
    for view in range(2):
        pixels = np.asarray(Image.open(tmp_path / "valid" / f"00000_{view:02d}_im.jpg"), dtype=np.float32)
        assert pixels.shape == (100, 150, 3) and pixels.std() > 15.0
    again = render(out=str(tmp_path), split="valid", tracks="lighthouse", frames=1, views=2, karts=3, seed=0)
    assert again is None
