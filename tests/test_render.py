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
from stk_vqa.data.questions import generate_view_qa
from stk_vqa.render import frame_writer, kart_boxes
from stk_vqa.render.cli import plan_races
from stk_vqa.render.game_data import GameNotInstalled, check_installed, prepare_datadir
from stk_vqa.data.scene import load_frame

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
        assert info["box_method"] in {frame_writer.BOX_METHOD_NONE, kart_boxes.BOX_METHOD}
        tracks.add(info["track"])
    assert len(tracks) >= 3, "the sample should cover several tracks"


def test_sample_boxes_lie_in_600x400_space():
    for path in sample_info_files():
        info = json.loads(path.read_text())
        for view in info["detections"]:
            for class_id, instance_id, x1, y1, x2, y2 in view:
                assert 0 <= x1 < x2 <= 600 and 0 <= y1 < y2 <= 400, path
                if class_id == 1:
                    assert 0 <= instance_id < len(info["karts"])


def test_sample_parses_and_labels_follow_its_boxes():
    """The lead's parser accepts every frame; QA pairs exist exactly where kart boxes exist (none invented)."""
    views_with_questions = 0
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
            views_with_questions += bool(pairs)
            if pairs:
                by_question = {pair.question: pair.answer for pair in pairs}
                assert by_question["What track is this?"] == info["track"]
                assert by_question["What kart is the ego car?"] in info["karts"]
    assert views_with_questions >= 60, "the bundled sample should give QA pairs for most of its views"


def test_sample_views_box_their_own_kart_or_none():
    """A view keeps boxes only when its camera model matched its own kart; otherwise it has none, with a reason."""
    ok_views = 0
    for path in sample_info_files():
        info = json.loads(path.read_text())
        assert info["box_method"] == kart_boxes.BOX_METHOD
        assert len(info["box_check"]) == len(info["camera_view"]) == len(info["detections"])
        for view, (check, detections) in enumerate(zip(info["box_check"], info["detections"])):
            ids = [det[1] for det in detections]
            assert len(ids) == len(set(ids)), f"{path} view {view}: a kart boxed twice"
            if check == "ok":
                assert info["view_kart"][view] in ids, f"{path} view {view}"
                ok_views += 1
            else:
                assert check.startswith("no boxes") and detections == [], f"{path} view {view}"
            view_matrix = np.asarray(info["camera_view"][view])
            assert view_matrix.shape == (4, 4)
            assert np.allclose(view_matrix[:3, :3] @ view_matrix[:3, :3].T, np.eye(3), atol=1e-3)
    assert ok_views >= 100


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


KART_FACING_FORWARD = (1.0, 0.0, 0.0, 0.0)  # pystk2's quaternion for a kart with basis = identity


def _ray_cast_depth(boxes, width=150, height=100, background=60.0):
    """Depth-buffer image of axis-aligned boxes (camera at the origin looking along +z), by brute force."""
    proj = kart_boxes.projection_matrix(width, height)
    z_best = np.full((height, width), background)
    for (cx, cy, cz), (sx, sy, sz) in boxes:
        for row in range(height):
            for col in range(width):
                ray = np.array([(2 * (col + 0.5) / width - 1) / proj[0, 0],
                                (1 - 2 * (row + 0.5) / height) / proj[1, 1], 1.0])
                lo = (np.array([cx - sx / 2, cy - sy / 2, cz - sz / 2])) / ray
                hi = (np.array([cx + sx / 2, cy + sy / 2, cz + sz / 2])) / ray
                t_in, t_out = np.minimum(lo, hi).max(), np.maximum(lo, hi).min()
                if t_in <= t_out and 0 < t_in < z_best[row, col]:
                    z_best[row, col] = t_in
    near, far = kart_boxes.DEPTH_NEAR, kart_boxes.DEPTH_FAR
    return far / (far - near) * (1 - near / z_best)


def test_depth_test_boxes_visible_pixels_and_excludes_occluded_parts():
    size = (1.0, 0.6, 1.5)
    far_kart, near_kart = ((0.0, 0.0, 12.0), size), ((-0.6, 0.0, 6.0), size)
    karts = [((0.0, 0.0, 12.0), KART_FACING_FORWARD, size), ((-0.6, 0.0, 6.0), KART_FACING_FORWARD, size)]
    view, proj = np.eye(4), kart_boxes.projection_matrix(150, 100)

    alone = kart_boxes.depth_to_distance(_ray_cast_depth([far_kart]))
    boxes = kart_boxes.view_kart_boxes(alone, view, proj, karts[:1])
    truth = np.argwhere(alone < 59)  # the far kart's pixels
    (y1, x1), (y2, x2) = truth.min(axis=0), truth.max(axis=0) + 1
    # the bottom 0.1 m of a kart is not tested against depth (the road there looks the same): <= 1 px lost
    assert len(boxes) == 1 and boxes[0].box[:3] == (x1, y1, x2) and y2 - 1 <= boxes[0].box[3] <= y2

    both = kart_boxes.depth_to_distance(_ray_cast_depth([far_kart, near_kart]))
    boxes = {b.kart: b.box for b in kart_boxes.view_kart_boxes(both, view, proj, karts)}
    near_truth = np.argwhere(both < 9)
    (ny1, nx1), (ny2, nx2) = near_truth.min(axis=0), near_truth.max(axis=0) + 1
    assert boxes[1][:3] == (nx1, ny1, nx2) and ny2 - 1 <= boxes[1][3] <= ny2
    assert boxes[0][0] >= nx2 - 1 and boxes[0][2] == x2, "the far kart's box must shrink to its unhidden part"
    only_near = kart_boxes.depth_to_distance(_ray_cast_depth([near_kart]))
    hidden = kart_boxes.view_kart_boxes(only_near, view, proj, [((-0.6, 0.0, 12.0), KART_FACING_FORWARD, size)])
    assert hidden == [], "a kart wholly behind another is not boxed"


def test_chase_camera_settles_behind_and_above_its_kart():
    camera = kart_boxes.ChaseCamera(max_speed=20.0)
    location, speed = np.array([5.0, 1.0, -3.0]), 20.0
    for _ in range(60):
        camera.update(location, KART_FACING_FORWARD, speed)
    # r = 1: offset (0, 0.85 + 1 / 2.5, -1.25 - 2.5) in the kart frame, target 0.5 above the kart
    assert np.allclose(camera.position, location + [0.0, 1.25, -3.75], atol=1e-3)
    assert np.allclose(camera.target, location + [0.0, 0.5, 0.0], atol=1e-3)
    in_camera = camera.view_matrix() @ np.append(location, 1.0)
    assert abs(in_camera[0]) < 1e-6 and in_camera[2] > 3.5  # straight ahead of the camera
    turned = kart_boxes.quaternion_matrix(kart_boxes.matrix_quaternion(kart_boxes.kart_basis((0.0, 0.6, 0.8, 0.0))))
    assert np.allclose(turned, kart_boxes.kart_basis((0.0, 0.6, 0.8, 0.0)), atol=1e-6)


def test_frame_detections_drop_a_view_whose_own_kart_does_not_match():
    size = (1.0, 0.6, 1.5)
    camera = kart_boxes.ChaseCamera()
    for _ in range(40):
        camera.update((0.0, 0.0, 0.0), KART_FACING_FORWARD, 0.0)
    empty_depth = np.full((100, 150), 0.999, dtype=np.float32)  # nothing near the camera: its own kart is absent
    result = kart_boxes.frame_detections([empty_depth], [camera], [((0.0, 0.0, 0.0), KART_FACING_FORWARD, size)])
    assert result["detections"] == [[]] and result["box_check"][0].startswith("no boxes")


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
    assert info["box_method"] == kart_boxes.BOX_METHOD and len(info["box_check"]) == 2
    for view, check in enumerate(info["box_check"]):
        assert (view in [det[1] for det in info["detections"][view]]) == (check == "ok")
    for view in range(2):
        pixels = np.asarray(Image.open(tmp_path / "valid" / f"00000_{view:02d}_im.jpg"), dtype=np.float32)
        assert pixels.shape == (100, 150, 3) and pixels.std() > 15.0
    again = render(out=str(tmp_path), split="valid", tracks="lighthouse", frames=1, views=2, karts=3, seed=0)
    assert again is None
