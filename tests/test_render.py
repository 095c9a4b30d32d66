"""Rendering (issue 10): labels from the engine's instance map, the shader overlay, planning/sharding, the sample.

Everything here runs without the game except ``test_render_one_frame_two_views`` (marked ``render``, deselected by
default; ``pytest -m render`` after ``make render-deps``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import stk_vqa
from stk_vqa.data.info_file import load_frame
from stk_vqa.data.questions import generate_view_qa
from stk_vqa.render import detections_from_instance, frame_writer, shaders
from stk_vqa.render.cli import parse_shard, plan_races
from stk_vqa.render.game_data import (
    GameNotInstalled,
    check_installed,
    kart_display_names,
)
from stk_vqa.render.instance import COURSE_CLASSES, kart_pixel_boxes

SAMPLE_DIR = Path(stk_vqa.__file__).parent / "data" / "sample"
FIXTURE_DIR = Path(__file__).parent / "data" / "render"
COURSE_KEYS = ["track", "karts", "detections", "distance_down_track", "velocity"]
INFO_NAME = re.compile(r"^[0-9a-f]{5}_info\.json$")


def label(class_id: int, instance_id: int) -> int:
    return class_id << 24 | instance_id


# --- detections_from_instance on synthetic maps --------------------------------------------------------------------


def test_boxes_are_inclusive_and_sorted_by_label():
    m = np.zeros((400, 600), dtype=np.uint32)
    m[155:, :] = label(2, 0)  # the track reaches the last row and column
    m[10:20, 30:41] = label(1, 4)
    m[50:52, 0:3] = label(1, 0)
    m[0, 599] = label(3, 7)  # one pixel in the top-right corner
    assert detections_from_instance(m) == [
        [1, 0, 0, 50, 2, 51],
        [1, 4, 30, 10, 40, 19],
        [2, 0, 0, 155, 599, 399],
        [3, 7, 599, 0, 599, 0],
    ]


def test_single_pixel_instances_are_kept_and_min_pixels_filters():
    m = np.zeros((8, 8), dtype=np.uint32)
    m[3, 4] = label(1, 2)
    m[0:2, 0:2] = label(5, 9)
    assert detections_from_instance(m) == [[1, 2, 4, 3, 4, 3], [5, 9, 0, 0, 1, 1]]
    assert detections_from_instance(m, min_pixels=2) == [[5, 9, 0, 0, 1, 1]]
    assert detections_from_instance(m, min_pixels=5) == []


def test_every_course_class_and_nothing_else():
    m = np.zeros((4, 16), dtype=np.uint32)
    for column, class_id in enumerate([0, 1, 2, 3, 4, 5, 6, 7, 8, 255]):
        m[:, column] = label(class_id, column)
    got = detections_from_instance(m)
    assert [d[0] for d in got] == [1, 2, 3, 4, 5, 6, 8, 255]  # 0 (nothing drawn) and 7 (never in the course) out
    assert set(COURSE_CLASSES) == {1, 2, 3, 4, 5, 6, 8, 255}
    assert all(d[1] == d[2] and d[2] == d[4] and (d[3], d[5]) == (0, 3) for d in got)
    assert detections_from_instance(np.zeros((4, 4), dtype=np.uint32)) == []


def test_occlusion_boxes_only_visible_pixels():
    m = np.zeros((40, 60), dtype=np.uint32)
    m[10:30, 10:50] = label(1, 1)  # a far kart...
    m[5:35, 20:40] = label(1, 0)  # ...cut in two by a near one: its box still spans both visible parts
    m[12:18, 22:30] = label(1, 0)  # a kart wholly behind kart 0 is not in the map at all
    got = {d[1]: d[2:] for d in detections_from_instance(m)}
    assert got == {0: [20, 5, 39, 34], 1: [10, 10, 49, 29]}
    m[10:30, 10:20] = label(1, 0)
    m[10:30, 40:50] = label(1, 0)
    assert [d[1] for d in detections_from_instance(m)] == [0], "a fully covered kart gets no box"


def test_bad_maps_are_refused():
    with pytest.raises(ValueError, match="2-D"):
        detections_from_instance(np.zeros((2, 3, 4), dtype=np.uint32))
    with pytest.raises(ValueError, match="integer"):
        detections_from_instance(np.zeros((2, 3), dtype=np.float32))


rectangles = st.lists(
    st.tuples(
        st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 255]),
        st.integers(0, 0xFFFFFF),
        st.integers(0, 29),
        st.integers(0, 19),
        st.integers(1, 30),
        st.integers(1, 20),
    ),
    min_size=0,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(rectangles)
def test_boxes_equal_the_tight_box_of_each_instance(painted):
    """Painter's algorithm over random rectangles (later ones occlude): each box = min/max of its pixels."""
    m = np.zeros((20, 30), dtype=np.uint32)
    for class_id, instance_id, x, y, w, h in painted:
        m[y : y + h, x : x + w] = label(class_id, instance_id)
    got = detections_from_instance(m)
    expected = []
    for value in np.unique(m):
        class_id = int(value) >> 24
        if class_id in COURSE_CLASSES:
            ys, xs = np.nonzero(m == value)
            expected.append(
                [class_id, int(value) & 0xFFFFFF, int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
            )
    assert got == expected
    for class_id, instance_id, x1, y1, x2, y2 in got:  # every box edge touches a pixel of its instance
        inside = m[y1 : y2 + 1, x1 : x2 + 1] == label(class_id, instance_id)
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()


def test_import_is_light():
    code = (
        "import sys; from stk_vqa.render import detections_from_instance; "
        "heavy = [m for m in ('pystk', 'PIL', 'torch', 'stk_vqa.render.race', 'stk_vqa.render.cli') "
        "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=Path(__file__).parents[1]
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- a real rendered frame ------------------------------------------------------------------------------------------


def fixture_frames() -> list[Path]:
    return sorted(FIXTURE_DIR.glob("*_info.json"))


def test_real_frame_kart_boxes_are_the_tight_boxes_of_their_pixels():
    infos = fixture_frames()
    assert infos, f"no rendered frame fixture in {FIXTURE_DIR}"
    karts_checked = 0
    for info_path in infos:
        info = json.loads(info_path.read_text())
        assert info["box_method"] == frame_writer.BOX_METHOD
        for view, detections in enumerate(info["detections"]):
            instance = frame_writer.load_instance(info_path.parent / f"{info_path.name[:5]}_{view:02d}_instance.npz")
            assert instance.shape == (400, 600) and instance.dtype == np.uint32
            assert detections == detections_from_instance(instance)
            kart_boxes = {d[1]: tuple(d[2:]) for d in detections if d[0] == 1}
            assert kart_boxes == kart_pixel_boxes(instance)
            karts_checked += len(kart_boxes)
            assert info["view_kart"][view] in kart_boxes, "the followed kart is in its own view"
    assert karts_checked >= 3


# --- the shader patcher and the data overlay -------------------------------------------------------------------------

STOCK_VERT = """layout(location = 0) in vec3 i_position;
layout(location = 12) in ivec2 i_misc_data;
#stk_include "utils/get_world_location.vert"
out vec2 uv;
void main()
{
    uv = vec2(0.0);
    gl_Position = vec4(i_position, 1.0);
}
"""
STOCK_FRAG = """in vec2 uv;
layout(location = 0) out vec4 o_diffuse_color;
void main(void)
{
    if (uv.x < 0.0) discard;
    o_diffuse_color = vec4(1.0);
}
"""


def test_patched_shaders_pass_the_label_to_output_3_first():
    vert = shaders.patch_vertex_shader(STOCK_VERT, "x.vert")
    assert "layout(location = 13) in uint i_label;" in vert and "flat out uint label;" in vert
    body = vert[vert.index("void main()") :]
    assert body.split("{", 1)[1].strip().startswith("label = i_label;")
    frag = shaders.patch_fragment_shader(STOCK_FRAG, "x.frag")
    assert "flat in uint label;" in frag and "layout(location = 3) out uint o_label;" in frag
    body = frag[frag.index("void main(void)") :]
    assert body.split("{", 1)[1].strip().startswith("o_label = label;"), "must be written before any discard"
    assert frag.count("void main") == 1 and frag.endswith(STOCK_FRAG[STOCK_FRAG.index("{") + 1 :])


def test_patcher_refuses_unexpected_shaders():
    with pytest.raises(shaders.ShaderPatchError, match="x.frag: expected one `void main"):
        shaders.patch_fragment_shader("void helper() {}\n", "x.frag")
    with pytest.raises(shaders.ShaderPatchError, match="already"):
        shaders.patch_fragment_shader(shaders.patch_fragment_shader(STOCK_FRAG), "twice.frag")
    with pytest.raises(shaders.ShaderPatchError, match="location 13"):
        shaders.patch_vertex_shader("layout(location = 13) in int x;\n" + STOCK_VERT, "x.vert")


def _fake_game_data(root: Path) -> Path:
    data = root / "debian_data"
    for track in ("abyss", "lighthouse"):
        (data / "tracks" / track).mkdir(parents=True)
        (data / "tracks" / track / "track.xml").write_text("<track/>")
    (data / "tracks" / "overworld").mkdir()  # not a course race track
    for kart, name in (("tux", "Tux"), ("gnu", "Gnu"), ("xue", "Xue"), ("sara_the_racer", "Pepper")):
        (data / "karts" / kart).mkdir(parents=True)
        (data / "karts" / kart / "kart.xml").write_text(
            f'<?xml version="1.0"?>\n<kart version="3"\n  name = "{name}"\n  groups="standard"/>\n'
        )
    shader_dir = data / "shaders"
    (shader_dir / "utils").mkdir(parents=True)
    (shader_dir / "utils" / "get_world_location.vert").write_text("// helper\n")
    for name, transparent, vert, frag in (
        ("solid", "N", "sp_pass.vert", "sp_solid.frag"),
        ("alphablend", "Y", "sp_pass.vert", "sp_transparent.frag"),
    ):
        (shader_dir / f"sps_0{len(list(shader_dir.glob('sps_*')))}_{name}.xml").write_text(
            f'<spshader><shader-info name="{name}" transparent="{transparent}"/>'
            f'<first-pass vertex-shader="{vert}" fragment-shader="{frag}" skinned-mesh-shader="sp_skinning.vert"/>'
            "</spshader>"
        )
    for name in ("sp_pass.vert", "sp_skinning.vert"):
        (shader_dir / name).write_text(STOCK_VERT)
    for name in ("sp_solid.frag", "sp_transparent.frag", "screenquad.vert"):
        (shader_dir / name).write_text(STOCK_FRAG)
    (data / "supertuxkart.1.4").write_text("")
    return data


def test_overlay_links_the_data_and_replaces_only_generated_shaders(tmp_path):
    data = _fake_game_data(tmp_path)
    assert shaders.opaque_first_pass_shaders(data / "shaders") == (
        ["sp_pass.vert", "sp_skinning.vert"],
        ["sp_solid.frag"],
    )
    root = shaders.build_overlay(tmp_path / "cache", data_dir=data)
    out = root / "data"
    assert (out / shaders.MARKER).is_file()
    assert (out / "tracks").resolve() == (data / "tracks").resolve()
    assert (out / "shaders" / "sp_transparent.frag").resolve() == (data / "shaders" / "sp_transparent.frag")
    for name in ("sp_pass.vert", "sp_skinning.vert", "sp_solid.frag", *shaders.NEW_SHADERS):
        assert not (out / "shaders" / name).is_symlink(), name
    assert "o_label = label;" in (out / "shaders" / "sp_solid.frag").read_text()
    assert "i_label" in (out / "shaders" / "sp_skinning.vert").read_text()
    assert (data / "shaders" / "sp_solid.frag").read_text() == STOCK_FRAG, "the game data is never modified"
    assert shaders.build_overlay(tmp_path / "cache", data_dir=data) == root  # built once
    (data / "shaders" / "sp_solid.frag").write_text(STOCK_FRAG.replace("1.0", "0.5"))
    assert shaders.build_overlay(tmp_path / "cache", data_dir=data) != root, "new game data -> new overlay"


def test_missing_track_shaders_are_written_by_the_project():
    for name in ("track.vert", "track.geom", "track_stencil.frag", "track_seg.frag"):
        assert "void main()" in shaders.NEW_SHADERS[name]
    assert "layout(location = 3) out uint o_label;" in shaders.NEW_SHADERS["track_seg.frag"]
    for uniform in ("uniform uint background_label;", "uniform uint track_label;", "uniform usampler2D tex;"):
        assert uniform in shaders.NEW_SHADERS["track_seg.frag"]
    assert "uniform float depth;" in shaders.NEW_SHADERS["track.geom"]


# --- planning, sharding, names, writing ----------------------------------------------------------------------------


def test_plan_races_gives_unique_stable_frame_ids(tmp_path):
    data = _fake_game_data(tmp_path)
    specs = plan_races("lighthouse,abyss", frames=5, views=2, karts=5, seed=7, race_frames=2, data_dir=data)
    ids = [spec.first_frame + i for spec in specs for i in range(spec.frames)]
    assert ids == list(range(10))
    assert [(s.track, s.frames) for s in specs] == [
        ("lighthouse", 2),
        ("lighthouse", 2),
        ("lighthouse", 1),
        ("abyss", 2),
        ("abyss", 2),
        ("abyss", 1),
    ]
    assert all(
        len(s.karts) == 2 and s.num_karts == 5 and set(s.karts) <= {"tux", "gnu", "xue", "sara_the_racer"}
        for s in specs
    )
    again = plan_races(["lighthouse", "abyss"], frames=5, views=2, karts=5, seed=7, race_frames=2, data_dir=data)
    assert [(s.karts, s.seed) for s in again] == [(s.karts, s.seed) for s in specs]
    other = plan_races("lighthouse,abyss", frames=5, views=2, karts=5, seed=8, race_frames=2, data_dir=data)
    assert [(s.karts, s.seed) for s in other] != [(s.karts, s.seed) for s in specs]


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_are_disjoint_deterministic_and_cover_everything(tmp_path, count):
    data = _fake_game_data(tmp_path)
    args = dict(tracks="lighthouse,abyss", frames=7, views=2, karts=4, seed=3, race_frames=3, data_dir=data)
    whole = {(s.first_frame, s.frames, s.seed, tuple(s.karts)) for s in plan_races(**args)}
    parts = [
        [(s.first_frame, s.frames, s.seed, tuple(s.karts)) for s in plan_races(shard=f"{k}/{count}", **args)]
        for k in range(count)
    ]
    union = [race for part in parts for race in part]
    assert len(union) == len(set(union)) and set(union) == whole
    assert parts == [
        [(s.first_frame, s.frames, s.seed, tuple(s.karts)) for s in plan_races(shard=(k, count), **args)]
        for k in range(count)
    ]


def test_bad_cli_input_is_one_line_value_error(tmp_path):
    data = _fake_game_data(tmp_path)
    cases = [
        (dict(tracks="overworld"), r"unknown track 'overworld'.*valid tracks: abyss, lighthouse"),
        (dict(tracks="abyss", kart_names="beastie"), r"unknown kart 'beastie'.*valid karts: gnu, sara_the_racer"),
        (dict(tracks="abyss", views=3, karts=2), "views"),
        (dict(tracks="abyss", shard="2/2"), "shard"),
        (dict(tracks="abyss", shard="a/b"), "shard must be K/N"),
        (dict(tracks="abyss", width=100, height=100), "3:2"),
    ]
    for overrides, message in cases:
        kwargs = dict(frames=1, views=1, karts=1, seed=0, data_dir=data) | overrides
        with pytest.raises(ValueError, match=message) as error:
            plan_races(**kwargs)
        assert "\n" not in str(error.value)
    assert parse_shard(None) == (0, 1) and parse_shard("1/4") == (1, 4)


def test_missing_game_says_what_to_install(tmp_path):
    with pytest.raises(GameNotInstalled, match="make render-deps"):
        check_installed(tmp_path / "no_such_data")


def test_kart_display_names_map_to_folder_names(tmp_path):
    data = _fake_game_data(tmp_path)
    assert kart_display_names(data) == {"Tux": "tux", "Gnu": "gnu", "Xue": "xue", "Pepper": "sara_the_racer"}


def test_write_frame_is_complete_and_atomic(tmp_path):
    images = [np.random.default_rng(v).integers(0, 255, (100, 150, 3), dtype=np.uint8) for v in range(2)]
    instance = np.zeros((400, 600), dtype=np.uint32)
    instance[200:220, 300:330] = label(1, 1)
    state = {
        "distance_down_track": [1.0, 2.0],
        "velocity": [[0, 0, 1], [0, 0, 2]],
        "detections": [detections_from_instance(instance), []],
        "view_kart": [1, 0],
    }
    info = frame_writer.build_info("abyss", ["tux", "gnu"], 2, state, {"seed": 3})
    assert not frame_writer.is_complete(tmp_path, 10, 2)
    frame_writer.write_frame(tmp_path, 10, images, info, instances=[instance, instance])
    assert frame_writer.is_complete(tmp_path, 10, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "0000a_00_im.jpg",
        "0000a_00_instance.npz",
        "0000a_01_im.jpg",
        "0000a_01_instance.npz",
        "0000a_info.json",
    ]
    saved = json.loads((tmp_path / "0000a_info.json").read_text())
    assert list(saved)[:5] == COURSE_KEYS and saved["seed"] == 3
    assert saved["detections"] == [[[1, 1, 300, 200, 329, 219]], []]
    assert saved["box_method"] == "engine-instance-map"
    assert np.array_equal(frame_writer.load_instance(tmp_path / "0000a_01_instance.npz"), instance)
    assert load_frame(tmp_path / "0000a_info.json").num_views == 2
    with pytest.raises(ValueError, match="detections"):
        frame_writer.build_info("abyss", ["tux"], 3, state, {})


# --- the bundled sample ---------------------------------------------------------------------------------------------


def sample_info_files() -> list[Path]:
    return sorted(SAMPLE_DIR.glob("*/*_info.json"))


def test_sample_is_in_the_course_layout():
    files = sample_info_files()
    assert len(files) >= 20, "the bundled sample should hold 20+ frames"
    assert {p.parent.name for p in files} == {"train", "valid"}
    tracks = {"train": set(), "valid": set()}
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
        assert info["box_method"] == "engine-instance-map"
        tracks[path.parent.name].add(info["track"])
    assert tracks == {
        "train": {"lighthouse", "abyss", "cocoa_temple", "zengarden"},
        "valid": {"hacienda", "snowtuxpeak"},
    }


def test_sample_boxes_follow_the_course_conventions():
    for path in sample_info_files():
        info = json.loads(path.read_text())
        assert len(info["camera_view"]) == len(info["camera_projection"]) == len(info["detections"])
        for view, detections in enumerate(info["detections"]):
            assert detections == sorted(detections, key=lambda d: (d[0], d[1])), f"{path} view {view}: order"
            for class_id, instance_id, x1, y1, x2, y2 in detections:
                assert class_id in COURSE_CLASSES
                assert 0 <= x1 <= x2 <= 599 and 0 <= y1 <= y2 <= 399, path  # inclusive, 600x400
                if class_id == 1:
                    assert 0 <= instance_id < len(info["karts"])
            assert np.asarray(info["camera_view"][view]).shape == (4, 4)


def test_sample_cameras_project_their_kart_into_its_box():
    """A point projects as P.T @ V.T @ [x, y, z, 1]: the followed kart's centre lands in its own box."""
    inside = total = 0
    for path in sample_info_files():
        info = json.loads(path.read_text())
        for view, detections in enumerate(info["detections"]):
            kart = info["view_kart"][view]
            boxes = {d[1]: d[2:] for d in detections if d[0] == 1}
            if kart not in boxes:
                continue
            view_m, proj_m = np.asarray(info["camera_view"][view]), np.asarray(info["camera_projection"][view])
            clip = proj_m.T @ view_m.T @ np.append(info["kart_location"][kart], 1.0)
            x, y = (clip[0] / clip[3] + 1) / 2 * 600, (1 - clip[1] / clip[3]) / 2 * 400
            x1, y1, x2, y2 = boxes[kart]
            total += 1
            inside += x1 - 1 <= x <= x2 + 1 and y1 - 1 <= y <= y2 + 1
    assert total >= 40 and inside / total >= 0.9


def test_sample_parses_and_labels_follow_its_boxes():
    """The parser accepts every frame; QA pairs exist exactly where kart boxes exist (none invented)."""
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
            views_with_questions += bool(pairs)
            if pairs:
                by_question = {pair.question: pair.answer for pair in pairs}
                assert by_question["What track is this?"] == info["track"]
                assert by_question["What kart is the ego car?"] in info["karts"]
    assert views_with_questions >= 60, "the bundled sample should give QA pairs for most of its views"


def test_sample_images_are_real_renders():
    stds, means = [], []
    for path in sample_info_files():
        info = json.loads(path.read_text())
        views = [
            np.asarray(Image.open(p).convert("RGB"), dtype=np.float32)
            for p in sorted(path.parent.glob(f"{path.name[:5]}_*_im.jpg"))
        ]
        for pixels in views:
            assert pixels.shape == (info["image_size"][1], info["image_size"][0], 3)
            stds.append(pixels.std())
            means.append(pixels.mean())
        for a in range(len(views)):  # each view is its own camera: no two views of a frame are the same picture
            for b in range(a + 1, len(views)):
                assert np.abs(views[a] - views[b]).mean() > 2.0, path
    assert min(stds) > 15.0, "a view is (nearly) flat: not a render"
    assert 20 < float(np.median(means)) < 235


# --- the game itself ------------------------------------------------------------------------------------------------


@pytest.mark.render
def test_render_one_frame_two_views(tmp_path):
    try:
        check_installed()
    except GameNotInstalled as missing:
        pytest.skip(str(missing))
    from stk_vqa.render.cli import render
    from stk_vqa.render.config import RenderConfig

    kwargs = dict(
        out=str(tmp_path),
        split="valid",
        tracks="lighthouse",
        frames=1,
        views=2,
        karts=4,
        seed=0,
        warmup_steps=60,
        step_interval=5,
        instances=True,
        stall_timeout=300,
    )
    assert render(RenderConfig(**kwargs)) is None  # nothing lost
    info_path = tmp_path / "valid" / "00000_info.json"
    info = json.loads(info_path.read_text())
    assert info["track"] == "lighthouse" and len(info["karts"]) == 4 and len(info["detections"]) == 2
    assert info["box_method"] == "engine-instance-map"
    frame = load_frame(info_path)
    for view in range(2):
        instance = frame_writer.load_instance(tmp_path / "valid" / f"00000_{view:02d}_instance.npz")
        assert instance.shape == (400, 600) and (instance >> 24 == 1).any() and (instance >> 24 == 2).any()
        assert info["detections"][view] == detections_from_instance(instance)
        assert info["view_kart"][view] in kart_pixel_boxes(instance), "the followed kart is boxed in its view"
        pixels = np.asarray(Image.open(tmp_path / "valid" / f"00000_{view:02d}_im.jpg"), dtype=np.float32)
        assert pixels.shape == (100, 150, 3) and pixels.std() > 15.0
        pairs = generate_view_qa(frame, view, image_size=(150, 100))
        assert {"What track is this?", "What kart is the ego car?"} <= {p.question for p in pairs}
    assert render(RenderConfig(**kwargs)) is None  # resumes: nothing to do


def test_render_command_fails_when_frames_are_lost_and_checks_its_flags(monkeypatch, tmp_path):
    from stk_vqa.cli import main
    from stk_vqa.render import cli as render_cli

    lost = {"out": str(tmp_path / "train"), "written": 9, "already_there": 0, "lost": 3,
            "errors": ["mines: race crashed (exit code -11)"]}  # fmt: skip
    monkeypatch.setattr(render_cli, "render", lambda config: lost)
    with pytest.raises(SystemExit, match=r"error: 3 frame\(s\) lost \(mines: race crashed .*re-run"):
        main(["render", "--out", str(tmp_path), "--tracks", "mines"])
    monkeypatch.setattr(render_cli, "render", lambda config: None)
    main(["render", "--out", str(tmp_path)])  # nothing lost: no error
    for flags, message in ((["--frames", "0"], "--frames: must be"), (["--split", "../x"], "not a split folder"),
                           (["--shard", "4/4"], "shard must be"), (["--stall_timeout", "0"], "must be > 0")):  # fmt: skip
        with pytest.raises(SystemExit, match=f"error: .*{re.escape(message)}"):
            main(["render", "--out", str(tmp_path), *flags])
