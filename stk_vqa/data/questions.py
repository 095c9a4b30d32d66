"""Question families: templates + answer functions over a :class:`~stk_vqa.data.scene.ViewScene`.

As in CLEVR's question engine, a family is a set of templates with a functional program that
answers them from the scene. Adding a family is one decorated function::

    @question_family("my_family", templates=("Is {kart} ...?",), default=False)
    def my_family(scene):
        yield "Is konqi ...?", "yes"

The families marked ``default=True`` reproduce the official labels of the course dataset exactly
(templates are the course's strings); the others are extensions, off unless selected by name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from .info_file import Frame
from .scene import COURSE_IMAGE_SIZE, ViewScene, view_scene


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str
    family: str


@dataclass(frozen=True)
class QuestionFamily:
    name: str
    templates: tuple[str, ...]
    answer_fn: Callable[[ViewScene], Iterable[tuple[str, str]]]
    default: bool
    description: str

    def ask(self, scene: ViewScene) -> list[QAPair]:
        return [QAPair(q, a, self.name) for q, a in self.answer_fn(scene)]


FAMILIES: dict[str, QuestionFamily] = {}
"""All registered families, in registration order (the order of questions within a view)."""


def question_family(name: str, templates: Sequence[str], default: bool = True):
    """Register the decorated answer function as question family ``name``."""

    def register(fn: Callable[[ViewScene], Iterable[tuple[str, str]]]):
        if name in FAMILIES:
            raise ValueError(f"question family {name!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()
        FAMILIES[name] = QuestionFamily(name, tuple(templates), fn, default, doc[0] if doc else "")
        return fn

    return register


def default_family_names() -> list[str]:
    return [name for name, fam in FAMILIES.items() if fam.default]


def resolve_families(families: str | Sequence[str] | None = None) -> list[QuestionFamily]:
    """Turn a selection into families: ``None``/``"default"`` = the official ones, ``"all"`` = every family,
    otherwise names (a comma-separated string or a sequence; ``default`` and ``all`` may appear among them)."""
    if families is None:
        names: list[str] = ["default"]
    elif isinstance(families, str):
        names = [n.strip() for n in families.split(",") if n.strip()]
    else:
        names = [str(n).strip() for n in families]
    selected: list[str] = []
    for name in names:
        expanded = default_family_names() if name == "default" else list(FAMILIES) if name == "all" else [name]
        for item in expanded:
            if item not in FAMILIES:
                raise ValueError(f"unknown question family {item!r}; known: {', '.join(FAMILIES)}")
            if item not in selected:
                selected.append(item)
    # Keep registry order so that output does not depend on how the selection was spelled.
    return [FAMILIES[n] for n in FAMILIES if n in selected]


_TEMPLATE_PATTERNS: dict[tuple[str, ...], list[tuple[re.Pattern, str, str]]] = {}


def _template_patterns() -> list[tuple[re.Pattern, str, str]]:
    key = tuple(FAMILIES)  # rebuilt when a family is registered or removed
    if key not in _TEMPLATE_PATTERNS:
        _TEMPLATE_PATTERNS.clear()
        patterns = []
        for family in FAMILIES.values():
            for template in family.templates:
                regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>.+?)", re.escape(template))
                patterns.append((re.compile(f"^{regex}$"), family.name, template))
        _TEMPLATE_PATTERNS[key] = patterns
    return _TEMPLATE_PATTERNS[key]


def match_template(question: str) -> tuple[str | None, str]:
    """``(family, template)`` of a question by the registered question families; ``(None, question)`` if none.

    Used to recover the family of QA pairs that come without one (legacy QA files)."""
    text = question.strip()
    for pattern, family, template in _template_patterns():
        if pattern.match(text):
            return family, template
    return None, text


def generate_scene_qa(scene: ViewScene, families: str | Sequence[str] | None = None) -> list[QAPair]:
    """All QA pairs of one view. A view with no kept kart gets no questions (the course's rule)."""
    if scene.ego is None:
        return []
    return [pair for fam in resolve_families(families) for pair in fam.ask(scene)]


def generate_view_qa(
    frame: Frame,
    view_index: int,
    image_size: Sequence[int] = COURSE_IMAGE_SIZE,
    families: str | Sequence[str] | None = None,
) -> list[QAPair]:
    return generate_scene_qa(view_scene(frame, view_index, image_size), families)


# ------------------------------------------------------------------------- the course's families (default)


@question_family("ego_kart", templates=("What kart is the ego car?",))
def _ego_kart(scene: ViewScene) -> Iterator[tuple[str, str]]:
    """Name of the ego kart (the kept kart nearest the image centre)."""
    yield "What kart is the ego car?", scene.ego.name


@question_family("kart_count", templates=("How many karts are there in the scenario?",))
def _kart_count(scene: ViewScene) -> Iterator[tuple[str, str]]:
    """Number of kept karts, the ego included."""
    yield "How many karts are there in the scenario?", str(len(scene.karts))


@question_family("track", templates=("What track is this?",))
def _track(scene: ViewScene) -> Iterator[tuple[str, str]]:
    """Name of the track."""
    yield "What track is this?", scene.frame.track


@question_family("left_right", templates=("Is {kart} to the left or right of the ego car?",))
def _left_right(scene: ViewScene) -> Iterator[tuple[str, str]]:
    """Side of each other kart: ``left`` if its centre x <= the ego's, else ``right``."""
    for kart in scene.others:
        yield f"Is {kart.name} to the left or right of the ego car?", scene.horizontal(kart)


@question_family("front_back", templates=("Is {kart} in front of or behind the ego car?",))
def _front_back(scene: ViewScene) -> Iterator[tuple[str, str]]:
    """``front`` if a kart's centre y < the ego's, else ``back``."""
    for kart in scene.others:
        yield f"Is {kart.name} in front of or behind the ego car?", scene.vertical(kart)


@question_family("relative_position", templates=("Where is {kart} relative to the ego car?",))
def _relative_position(scene: ViewScene) -> Iterator[tuple[str, str]]:
    """``"{front|back} and {left|right}"`` for each other kart."""
    for kart in scene.others:
        yield f"Where is {kart.name} relative to the ego car?", f"{scene.vertical(kart)} and {scene.horizontal(kart)}"


DIRECTIONAL_COUNT_TEMPLATES = {
    "How many karts are to the left of the ego car?": ("horizontal", "left"),
    "How many karts are to the right of the ego car?": ("horizontal", "right"),
    "How many karts are in front of the ego car?": ("vertical", "front"),
    "How many karts are behind the ego car?": ("vertical", "back"),
}


@question_family("directional_count", templates=tuple(DIRECTIONAL_COUNT_TEMPLATES))
def _directional_count(scene: ViewScene) -> Iterator[tuple[str, str]]:
    """Karts (ego excluded) left of / right of / in front of / behind the ego."""
    for question, (axis, side) in DIRECTIONAL_COUNT_TEMPLATES.items():
        relation = getattr(scene, axis)
        yield question, str(sum(1 for kart in scene.others if relation(kart) == side))


# ------------------------------------------------------------------------------- extension families


@question_family("nearest_kart", templates=("Which kart is nearest to the ego car?",), default=False)
def _nearest_kart(scene: ViewScene) -> Iterator[tuple[str, str]]:
    """The other kart whose centre is nearest the ego's centre in the image (ties: detection order)."""
    ex, ey = scene.ego.center
    best, best_d2 = None, math.inf
    for kart in scene.others:
        d2 = (kart.center[0] - ex) ** 2 + (kart.center[1] - ey) ** 2
        if d2 < best_d2:
            best, best_d2 = kart, d2
    if best is not None:
        yield "Which kart is nearest to the ego car?", best.name


@question_family("race_leader", templates=("Which of the visible karts is leading the race?",), default=False)
def _race_leader(scene: ViewScene) -> Iterator[tuple[str, str]]:
    """The kept kart (ego included) with the largest ``distance_down_track`` (ties: detection order).

    Asked only when at least two karts are visible, so the answer is not simply the ego."""
    if len(scene.karts) < 2:
        return
    distance = scene.frame.distance_down_track
    leader = scene.karts[0]
    for kart in scene.karts[1:]:
        if distance[kart.instance_id] > distance[leader.instance_id]:
            leader = kart
    yield "Which of the visible karts is leading the race?", leader.name


SPEED_BUCKETS = ((1.0, "stopped"), (10.0, "slow"), (20.0, "medium"), (math.inf, "fast"))
"""Upper bounds (exclusive, in game units per second = |velocity|) of the ego speed buckets."""


def speed_bucket(speed: float) -> str:
    for upper, label in SPEED_BUCKETS:
        if speed < upper:
            return label
    raise AssertionError("unreachable: the last bucket is unbounded")


@question_family("ego_speed", templates=("How fast is the ego car going?",), default=False)
def _ego_speed(scene: ViewScene) -> Iterator[tuple[str, str]]:
    """Bucket of the ego's speed |velocity|: stopped < 1 <= slow < 10 <= medium < 20 <= fast."""
    vx, vy, vz = scene.frame.velocity[scene.ego.instance_id]
    yield "How fast is the ego car going?", speed_bucket(math.sqrt(vx * vx + vy * vy + vz * vz))


COUNTED_OBJECTS = {4: "pickups", 5: "nitro canisters", 6: "bombs", 8: "projectiles"}
"""Non-kart classes whose visible instances the ``object_count`` family counts (always asked, even at 0)."""
REGION_CLASSES = {2, 3}
"""Track and background: image regions rather than countable objects."""


@question_family("object_count", templates=("How many {objects} are there in the scenario?",), default=False)
def _object_count(scene: ViewScene) -> Iterator[tuple[str, str]]:
    """Visible non-kart objects by class: pickups, nitro, bombs, projectiles (always asked), and any other
    non-region class present (e.g. class 7 track objects or an unknown id), asked as "objects of class N"."""
    counts: dict[int, int] = {cid: 0 for cid in COUNTED_OBJECTS}
    for obj in scene.objects:
        if obj.class_id not in REGION_CLASSES:
            counts[obj.class_id] = counts.get(obj.class_id, 0) + 1
    for class_id in sorted(counts):
        label = COUNTED_OBJECTS.get(class_id, f"objects of class {class_id}")
        yield f"How many {label} are there in the scenario?", str(counts[class_id])
