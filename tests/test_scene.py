"""Scene parsing and the course's geometry rules, on the real reference info files and hand-made cases."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stk_vqa.data.info_file import Detection, InfoFileError, load_frame, parse_frame
from stk_vqa.data.scene import ScaledBox, scale_box, view_scene


def frame_dict(views, karts=("a", "b", "c", "d"), track="lighthouse"):
    n = len(karts)
    return {
        "track": track,
        "karts": list(karts),
        "detections": views,
        "distance_down_track": [float(i) for i in range(n)],
        "velocity": [[0.0, 0.0, float(i)] for i in range(n)],
    }


def test_reference_frame_view0_by_hand(reference_info_dir):
    # 00000 view 0: [1,0,252,146,346,239] -> (63,36,86,59), centre (74.5,47.5), 6.5 from the image centre;
    #               [1,4,383,162,422,193] -> (95,40,105,48), centre (100,44)
    frame = load_frame(reference_info_dir / "00000_info.json")
    assert frame.track == "abyss" and frame.num_views == 10 and frame.frame_id == "00000"
    scene = view_scene(frame, 0)
    assert [k.name for k in scene.karts] == ["gnu", "beastie"]
    assert scene.karts[0].box == ScaledBox(63, 36, 86, 59)
    assert scene.ego.name == "gnu"
    beastie = scene.karts[1]
    assert (scene.horizontal(beastie), scene.vertical(beastie)) == ("right", "front")


def test_reference_frame_small_karts_dropped(reference_info_dir):
    # 00000 view 1: kart 0 scales to (71,37,76,41) (height 4 < 5) and kart 4 to (82,38,86,42) (width 4): dropped.
    scene = view_scene(load_frame(reference_info_dir / "00000_info.json"), 1)
    assert [k.instance_id for k in scene.karts] == [1]
    assert scene.ego.name == "sara_the_racer"


def test_truncation_not_rounding():
    det = Detection(1, 0, 7, 7, 31, 31)  # 7/4 = 1.75 -> 1, 31/4 = 7.75 -> 7
    assert scale_box(det, (150, 100)) == ScaledBox(1, 1, 7, 7)
    assert scale_box(det, (600, 400)) == ScaledBox(7, 7, 31, 31)


def test_outside_and_size_rules():
    views = [
        [
            [1, 0, 200, 160, 400, 240],  # kept, at the centre
            [1, 1, -100, 10, -8, 60],  # x2 = int(-2.0) < 0: dropped (-2 would truncate to 0 and stay)
            [1, 2, 700, 10, 800, 60],  # x1 > W: dropped
            [1, 3, 0, 0, 19, 40],  # scaled width 4: dropped
        ]
    ]
    scene = view_scene(parse_frame(frame_dict(views), "x/00000_info.json"), 0)
    assert [k.instance_id for k in scene.karts] == [0]


def test_ego_tie_goes_to_first_in_detection_order():
    # Two karts mirrored around the image centre: equal distance. The first listed is the ego, whichever it is.
    left, right = [1, 0, 160, 180, 220, 220], [1, 1, 380, 180, 440, 220]
    for order, ego_id in (([left, right], 0), ([right, left], 1)):
        scene = view_scene(parse_frame(frame_dict([order]), "x/00000_info.json"), 0)
        assert scene.ego.instance_id == ego_id


def test_ego_tie_between_unmirrored_karts():
    # centres (75+3, 50+4) and (75+5, 50): both exactly 5 px from the image centre (150x100 -> label space x4)
    a = [1, 0, 4 * 73, 4 * 49, 4 * 83, 4 * 59]  # scaled (73,49,83,59), centre (78, 54)
    b = [1, 1, 4 * 75, 4 * 45, 4 * 85, 4 * 55]  # scaled (75,45,85,55), centre (80, 50)
    for order, ego_id in (([a, b], 0), ([b, a], 1)):
        scene = view_scene(parse_frame(frame_dict([order]), "x/00000_info.json"), 0)
        assert [k.center for k in scene.karts] in ([(78, 54), (80, 50)], [(80, 50), (78, 54)])
        assert scene.ego.instance_id == ego_id


def test_equal_coordinates_count_as_left_and_back():
    views = [[[1, 0, 280, 180, 320, 220], [1, 1, 280, 180, 320, 220]]]
    scene = view_scene(parse_frame(frame_dict(views), "x/00000_info.json"), 0)
    other = scene.others[0]
    assert scene.horizontal(other) == "left"
    assert scene.vertical(other) == "back"


def test_unknown_class_ids_are_objects_not_errors():
    views = [[[1, 0, 280, 180, 320, 220], [255, 7, 10, 10, 100, 100], [42, 1, 10, 10, 100, 100]]]
    scene = view_scene(parse_frame(frame_dict(views), "x/00000_info.json"), 0)
    assert sorted(o.class_id for o in scene.objects) == [42, 255]


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.pop("track"), "track"),
        (lambda d: d.pop("karts"), "karts"),
        (lambda d: d.pop("velocity"), "velocity"),
        (lambda d: d["detections"][0].append([1, 9, 0, 0, 10, 10]), "detections[0][1][1] (instance_id)"),
        (lambda d: d["detections"][0].append([1, 0, "12", 0, 10, 10]), "detections[0][1][2]"),
        (lambda d: d["detections"][0].append([1, 0, float("nan"), 0, 10, 10]), "detections[0][1][2]"),
        (lambda d: d["detections"][0].append([1, 0, 0, 10]), "detections[0][1]"),
        (lambda d: d["velocity"].pop(), "velocity"),
        (lambda d: d["velocity"].__setitem__(0, [1, 2]), "velocity[0]"),
        (lambda d: d.__setitem__("karts", ["a", None, "c", "d"]), "karts[1]"),
    ],
)
def test_bad_input_names_file_and_field(mutate, field):
    data = frame_dict([[[1, 0, 280, 180, 320, 220]]])
    mutate(data)
    with pytest.raises(InfoFileError) as err:
        parse_frame(data, "split/0000f_info.json")
    assert err.value.field == field
    assert "split/0000f_info.json" in str(err.value) and field in str(err.value)


def test_malformed_json_names_file(tmp_path):
    path = tmp_path / "00001_info.json"
    path.write_text('{"track": "abyss", ')
    with pytest.raises(InfoFileError, match="00001_info.json.*malformed JSON"):
        load_frame(path)


box = st.integers(min_value=-200, max_value=800)


@st.composite
def kart_views(draw):
    n = draw(st.integers(min_value=1, max_value=10))
    ids = draw(st.permutations(range(10)))  # a kart appears at most once per view, as in the dataset
    dets = []
    for i in range(n):
        x1, y1 = draw(box), draw(box)
        w, h = draw(st.integers(0, 300)), draw(st.integers(0, 300))
        dets.append([1, ids[i], x1, y1, x1 + w, y1 + h])
    return dets


sizes = st.sampled_from([(150, 100), (600, 400), (300, 200), (128, 96)])


@settings(max_examples=300, deadline=None)
@given(kart_views(), sizes)
def test_property_kept_karts_obey_the_rules(dets, size):
    frame = parse_frame(frame_dict([dets], karts=[f"k{i}" for i in range(10)]), "p/00000_info.json")
    scene = view_scene(frame, 0, size)
    w, h = size
    for kart in scene.karts:
        b = kart.box
        assert b.width >= 5 and b.height >= 5
        assert not (b.x2 < 0 or b.x1 > w or b.y2 < 0 or b.y1 > h)
    # every class-1 detection that satisfies the rules is kept, in order
    expected = []
    for d in dets:
        b = scale_box(Detection(*d), size)
        if b.width >= 5 and b.height >= 5 and not (b.x2 < 0 or b.x1 > w or b.y2 < 0 or b.y1 > h):
            expected.append(b)
    assert [k.box for k in scene.karts] == expected
    if scene.karts:
        dist = lambda k: math.hypot(k.center[0] - w / 2, k.center[1] - h / 2)  # noqa: E731
        assert all(dist(scene.ego) <= dist(k) for k in scene.karts)
        # no earlier kart is strictly as close: ties resolved to the first
        first_best = min(range(len(scene.karts)), key=lambda i: dist(scene.karts[i]))
        assert scene.karts[first_best] is scene.ego
    else:
        assert scene.ego is None


def test_frame_roundtrip_from_json_text(tmp_path, reference_info_dir):
    src = reference_info_dir / "0001a_info.json"
    dst = tmp_path / "0001a_info.json"
    dst.write_text(json.dumps(json.loads(src.read_text())))
    assert dataclasses.replace(load_frame(dst), source=str(src)) == load_frame(src)


def test_fast_json_path_reads_what_the_stdlib_reads(reference_info_dir, tmp_path):
    """load_frame parses with orjson and falls back to json: both must give the same frame, and what orjson refuses
    (NaN, integers beyond 64 bits) still gets the stdlib's reading and the usual named error."""
    for path in sorted(reference_info_dir.glob("*_info.json")):
        assert load_frame(path) == parse_frame(json.loads(path.read_bytes()), path)
    data = json.loads(sorted(reference_info_dir.glob("*_info.json"))[0].read_text())
    data["distance_down_track"][0] = float("nan")
    bad = tmp_path / "00001_info.json"
    bad.write_text(json.dumps(data))  # `NaN`: not JSON for orjson, a float for json
    with pytest.raises(InfoFileError, match=r"distance_down_track\[0\]"):
        load_frame(bad)


@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**63 - 1))
def test_orjson_and_json_read_numbers_the_same(number):
    import orjson

    text = json.dumps([number])
    assert orjson.loads(text) == json.loads(text) and type(orjson.loads(text)[0]) is type(json.loads(text)[0])
