"""One SuperTuxKart race in this process (the engine allows one per process): step it, grab views, labels, state.

Engine: pysupertuxkart 1.1.2 (module ``pystk``, the engine the course data was made with) reading Debian's game
data through the label-aware overlay of :mod:`stk_vqa.render.shaders`. ``views`` players, all driven by the AI,
carry the cameras, so view ``i`` follows player ``i``; the game fills the race up to ``num_karts`` with its own AI
karts (it picks their models) and numbers those first, so player ``i``'s kart id is ``view_kart[i]``, read from the
engine. Every view is rendered at 600x400, the space of the course's
boxes: the instance map at that size gives the detections (:func:`stk_vqa.render.instance.detections_from_instance`),
the colour image is then resized to the requested image size.

Speed: the engine renders every view at every ``race.step()``. By default the ``step_interval`` steps between two
sampled frames are one engine step of ``step_interval * step_size`` seconds: the physics and the AI run the same
fixed ticks, only the views between samples are not drawn (``step_interval`` times less rendering). The one visible
difference: the chase camera's easing (factor ``min(1, 5 dt)``) reaches its target within such a step, so the camera
sits at its resting place behind the kart instead of lagging by a fraction of a step. ``render_every_step=True``
draws every step (the lagging camera, ``step_interval`` times slower).
"""

from __future__ import annotations

import os
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from stk_vqa.render.instance import LABEL_SIZE, detections_from_instance

# Mesa's llvmpipe stalls for minutes in anisotropic texture filtering (the engine always asks for 4x when the
# driver offers it); hiding the extension removes the stalls, leaves the instance maps unchanged and renders
# 3-4x faster. Set before the GL context exists; a value the user set is kept.
MESA_OVERRIDE = "-GL_EXT_texture_filter_anisotropic"


@dataclass
class RaceSpec:
    """Everything that determines one race (and therefore its frames)."""

    track: str
    karts: list[str]  # models of the camera karts 0..views-1 (the game picks the others)
    views: int
    frames: int
    first_frame: int  # frame id of this race's first frame; ids are first_frame .. first_frame+frames-1
    seed: int
    num_karts: int = 0  # karts in the race (0: len(karts))
    width: int = 150
    height: int = 100
    warmup_steps: int = 150
    step_interval: int = 10
    step_size: float = 0.1
    anisotropic: bool = False  # True: leave GL_EXT_texture_filter_anisotropic on (benchmark baseline only)
    render_every_step: bool = False  # True: one engine step (and render) per step_size; step_interval x slower


@dataclass
class RenderedFrame:
    frame_id: int
    step: int
    images: list[np.ndarray]  # one HxWx3 uint8 per view, at the requested size
    state: dict = field(default_factory=dict)
    instances: list[np.ndarray] = field(default_factory=list)  # one 400x600 uint32 per view


def _world_state(world) -> dict:
    karts = sorted(world.karts, key=lambda k: int(k.id))
    if [int(k.id) for k in karts] != list(range(len(karts))):
        raise RuntimeError(f"kart ids are not 0..{len(karts) - 1}: {[int(k.id) for k in karts]}")
    return {
        "karts": [str(k.name) for k in karts],
        "distance_down_track": [float(k.distance_down_track) for k in karts],
        "velocity": [[float(x) for x in k.velocity] for k in karts],
        "kart_location": [[float(x) for x in k.location] for k in karts],
        "kart_front": [[float(x) for x in k.front] for k in karts],
        "kart_rotation": [[float(x) for x in k.rotation] for k in karts],
        "kart_size": [[float(x) for x in k.size] for k in karts],
        "items": [
            {
                "id": int(i.id),
                "type": str(i.type.name),
                "location": [float(x) for x in i.location],
                "size": float(i.size),
            }
            for i in world.items
        ],
    }


def start_engine(data_root: str, anisotropic: bool = False):
    """Import and initialise the engine once in this process (600x400, low-definition preset); return ``pystk``."""
    if not anisotropic:
        os.environ.setdefault("MESA_EXTENSION_OVERRIDE", MESA_OVERRIDE)
    elif os.environ.get("MESA_EXTENSION_OVERRIDE") == MESA_OVERRIDE:
        del os.environ["MESA_EXTENSION_OVERRIDE"]
    os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
    # the engine imports ``pystk_data`` for its asset folder: point it at the overlay (no PySuperTuxKartData)
    sys.modules["pystk_data"] = types.SimpleNamespace(data_dir=str(data_root))
    import pystk

    # STK_VQA_ENGINE_LOG=info|warn|debug shows the engine's own log (shader compilation etc.)
    pystk.set_log_level(getattr(pystk.LogLevel, os.environ.get("STK_VQA_ENGINE_LOG", "error")))
    graphics = pystk.GraphicsConfig.ld()
    graphics.screen_width, graphics.screen_height = LABEL_SIZE
    pystk.init(graphics)
    return pystk


def run_race(spec: RaceSpec, data_root: str, skip: set[int] = frozenset()) -> Iterator[RenderedFrame]:
    """Yield the race's frames in order; frames in ``skip`` are stepped past but not read back."""
    from PIL import Image

    pystk = start_engine(data_root, spec.anisotropic)
    config = pystk.RaceConfig()
    while len(config.players):  # the default config holds one human player; we want AI-driven cameras only
        config.players.pop()
    for index in range(spec.views):
        config.players.append(
            pystk.PlayerConfig(kart=spec.karts[index], controller=pystk.PlayerConfig.Controller.AI_CONTROL)
        )
    config.track = spec.track
    config.num_kart = max(spec.num_karts, spec.views)
    config.seed = spec.seed
    stride = 1 if spec.render_every_step else max(1, spec.step_interval)  # nominal steps per engine step
    config.step_size = spec.step_size * stride
    config.laps = 100  # never finish while we sample

    race = pystk.Race(config)
    race.start()
    world = pystk.WorldState()
    step = 0  # in nominal steps of spec.step_size
    while step < spec.warmup_steps:
        race.step()
        step += stride
    for index in range(spec.frames):
        started = time.perf_counter()
        target = step + spec.step_interval
        while step < target:
            race.step()
            step += stride
        frame_id = spec.first_frame + index
        if frame_id in skip:
            continue
        world.update()
        render_data = list(race.render_data)
        if len(render_data) != spec.views:
            raise RuntimeError(f"pystk returned {len(render_data)} views, expected {spec.views}")
        images, instances = [], []
        for view in render_data:
            image = np.asarray(view.image, dtype=np.uint8)
            if image.shape[:2] != (LABEL_SIZE[1], LABEL_SIZE[0]):
                raise RuntimeError(f"pystk returned a {image.shape} image, expected {LABEL_SIZE[1]}x{LABEL_SIZE[0]}")
            if (spec.width, spec.height) != LABEL_SIZE:
                image = np.asarray(Image.fromarray(image).resize((spec.width, spec.height), Image.BILINEAR))
            images.append(np.array(image, copy=True))
            instances.append(np.array(view.instance, dtype=np.uint32, copy=True))
        state = _world_state(world)
        state["time"] = float(world.time)
        state["detections"] = [detections_from_instance(instance) for instance in instances]
        players = list(world.players)
        state["view_kart"] = [int(p.kart.id) for p in players]  # view i follows player i's kart (an id in karts)
        state["camera_view"] = [np.asarray(p.camera.view, dtype=np.float64).round(6).tolist() for p in players]
        state["camera_projection"] = [
            np.asarray(p.camera.projection, dtype=np.float64).round(6).tolist() for p in players
        ]
        state["render_seconds"] = round(time.perf_counter() - started, 4)  # steps + readback + labels
        yield RenderedFrame(frame_id=frame_id, step=step, images=images, state=state, instances=instances)
