"""Question families: the course's templates and answers, properties, and the extension families."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from test_scene import frame_dict, kart_views, sizes

from stk_vqa.data.info_file import load_frame, parse_frame
from stk_vqa.data.questions import (
    FAMILIES,
    default_family_names,
    generate_scene_qa,
    generate_view_qa,
    question_family,
    resolve_families,
    speed_bucket,
)
from stk_vqa.data.scene import view_scene


def qa_dict(pairs):
    return {p.question: p.answer for p in pairs}


def test_course_templates_for_a_reference_view(reference_info_dir):
    pairs = generate_view_qa(load_frame(reference_info_dir / "00000_info.json"), 0)
    assert qa_dict(pairs) == {
        "What kart is the ego car?": "gnu",
        "How many karts are there in the scenario?": "2",
        "What track is this?": "abyss",
        "Is beastie to the left or right of the ego car?": "right",
        "Is beastie in front of or behind the ego car?": "front",
        "Where is beastie relative to the ego car?": "front and right",
        "How many karts are to the left of the ego car?": "0",
        "How many karts are to the right of the ego car?": "1",
        "How many karts are in front of the ego car?": "1",
        "How many karts are behind the ego car?": "0",
    }


def test_view_without_karts_gets_no_questions():
    frame = parse_frame(frame_dict([[[2, 0, 0, 0, 599, 399]]]), "x/00000_info.json")
    assert generate_view_qa(frame, 0, families="all") == []


def test_default_families_are_the_course_ones_and_extensions_are_off():
    assert default_family_names() == [
        "ego_kart",
        "kart_count",
        "track",
        "left_right",
        "front_back",
        "relative_position",
        "directional_count",
    ]
    assert {"nearest_kart", "race_leader", "ego_speed", "object_count"} <= set(FAMILIES) - set(default_family_names())


def test_resolve_families_selection():
    assert [f.name for f in resolve_families("track,ego_speed")] == ["track", "ego_speed"]
    assert [f.name for f in resolve_families(["ego_speed", "track"])] == ["track", "ego_speed"]
    assert len(resolve_families("all")) == len(FAMILIES)
    assert [f.name for f in resolve_families("default,race_leader")][-1] == "race_leader"
    with pytest.raises(ValueError, match="unknown question family 'nope'"):
        resolve_families("track,nope")


def test_registering_a_family_is_one_decorated_function():
    name = "test_only_kart_names"
    try:

        @question_family(name, templates=("Is {kart} visible?",), default=False)
        def _visible(scene):
            for kart in scene.karts:
                yield f"Is {kart.name} visible?", "yes"

        frame = parse_frame(frame_dict([[[1, 2, 280, 180, 320, 220]]]), "x/00000_info.json")
        pairs = generate_view_qa(frame, 0, families=name)
        assert [(p.question, p.answer, p.family) for p in pairs] == [("Is c visible?", "yes", name)]
        with pytest.raises(ValueError, match="already registered"):
            question_family(name, templates=())(lambda s: [])
    finally:
        FAMILIES.pop(name, None)


@settings(max_examples=300, deadline=None)
@given(kart_views(), sizes)
def test_property_directional_counts_partition_the_other_karts(dets, size):
    frame = parse_frame(frame_dict([dets], karts=[f"k{i}" for i in range(10)]), "p/00000_info.json")
    scene = view_scene(frame, 0, size)
    qa = qa_dict(generate_scene_qa(scene))
    if scene.ego is None:
        assert qa == {}
        return
    total = int(qa["How many karts are there in the scenario?"])
    assert total == len(scene.karts)
    left = int(qa["How many karts are to the left of the ego car?"])
    right = int(qa["How many karts are to the right of the ego car?"])
    front = int(qa["How many karts are in front of the ego car?"])
    behind = int(qa["How many karts are behind the ego car?"])
    assert left + right == total - 1
    assert front + behind == total - 1
    # "where" agrees with the two binary questions for every other kart
    pairs = generate_scene_qa(scene)
    for kart in scene.others:
        where = [p.answer for p in pairs if p.question == f"Where is {kart.name} relative to the ego car?"]
        lr = [p.answer for p in pairs if p.question == f"Is {kart.name} to the left or right of the ego car?"]
        fb = [p.answer for p in pairs if p.question == f"Is {kart.name} in front of or behind the ego car?"]
        assert f"{fb[0]} and {lr[0]}" in where
    counts = Counter(p.family for p in pairs)
    assert counts["left_right"] == counts["front_back"] == counts["relative_position"] == total - 1
    assert counts["directional_count"] == 4


@settings(max_examples=200, deadline=None)
@given(kart_views(), sizes)
def test_property_extension_answers_are_consistent(dets, size):
    frame = parse_frame(frame_dict([dets], karts=[f"k{i}" for i in range(10)]), "p/00000_info.json")
    scene = view_scene(frame, 0, size)
    qa = qa_dict(generate_scene_qa(scene, "nearest_kart,race_leader"))
    visible = {k.name for k in scene.karts}
    if len(scene.karts) >= 2:
        assert qa["Which kart is nearest to the ego car?"] in visible - {scene.ego.name}
        leader = qa["Which of the visible karts is leading the race?"]
        # distance_down_track of kart i is i in frame_dict: the leader has the largest visible id
        assert leader == f"k{max(k.instance_id for k in scene.karts)}"
    else:
        assert qa == {}


def test_speed_buckets():
    assert [speed_bucket(s) for s in (0.0, 0.99, 1.0, 9.99, 10.0, 19.9, 20.0, 80.0)] == [
        "stopped",
        "stopped",
        "slow",
        "slow",
        "medium",
        "medium",
        "fast",
        "fast",
    ]


def test_ego_speed_and_object_count_on_reference(reference_info_dir):
    frame = load_frame(reference_info_dir / "00000_info.json")
    qa = qa_dict(generate_view_qa(frame, 0, families="ego_speed,object_count"))
    # ego of view 0 is gnu (kart 0): |(-5.58, 0.05, -16.18)| = 17.1 -> medium
    assert qa["How fast is the ego car going?"] == "medium"
    # worked out from the raw detections (scaled by 1/4, all non-empty and inside the image):
    # view 6: class 4 at (50,40,56,45) and (88,39,93,43), class 6 at (68,38,78,44); view 2: class 5 twice
    qa6 = qa_dict(generate_view_qa(frame, 6, families="object_count"))
    assert qa6 == {
        "How many pickups are there in the scenario?": "2",
        "How many nitro canisters are there in the scenario?": "0",
        "How many bombs are there in the scenario?": "1",
        "How many projectiles are there in the scenario?": "0",
    }
    qa2 = qa_dict(generate_view_qa(frame, 2, families="object_count"))
    assert qa2["How many nitro canisters are there in the scenario?"] == "2"
    assert qa2["How many pickups are there in the scenario?"] == "0"
