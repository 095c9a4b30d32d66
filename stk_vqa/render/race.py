"""One SuperTuxKart race in this process (pystk2 allows one per process): step it, grab views and state.

Every kart is an AI player; the first ``views`` players have a camera (``camera_mode=ON``), so view ``i``
follows kart ``i``. pystk2 0.7.4 leaves ``render_data[i].instance`` empty and ``WorldState.players[i].camera``
None, so each view's camera is modelled from its kart's state at every step and the kart boxes come from that
model plus the depth map (:mod:`stk_vqa.render.kart_boxes`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from stk_vqa.render.game_data import prepare_datadir
from stk_vqa.render.kart_boxes import ChaseCamera, frame_detections


@dataclass
class RaceSpec:
    """Everything that determines one race (and therefore its frames)."""

    track: str
    karts: list[str]  # kart id = index
    views: int
    frames: int
    first_frame: int  # frame id of this race's first frame; ids are first_frame .. first_frame+frames-1
    seed: int
    width: int = 150
    height: int = 100
    warmup_steps: int = 150
    step_interval: int = 10
    step_size: float = 0.1


@dataclass
class RenderedFrame:
    frame_id: int
    step: int
    images: list[np.ndarray]  # one HxWx3 uint8 per view
    state: dict = field(default_factory=dict)


def _kart_state(world) -> dict:
    karts = list(world.karts)
    return {
        "distance_down_track": [float(k.distance_down_track) for k in karts],
        "velocity": [[float(x) for x in k.velocity] for k in karts],
        "kart_location": [[float(x) for x in k.location] for k in karts],
        "kart_front": [[float(x) for x in k.front] for k in karts],
        "kart_rotation": [[float(x) for x in k.rotation] for k in karts],
        "kart_size": [[float(x) for x in k.size] for k in karts],
        "kart_race_position": [int(k.position) for k in karts],
        "items": [
            {"id": int(i.id), "type": str(i.type.name), "location": [float(x) for x in i.location], "size": float(i.size)}
            for i in world.items
        ],
    }


def run_race(spec: RaceSpec, skip: set[int] = frozenset()) -> Iterator[RenderedFrame]:
    """Yield the race's frames in order; frames in ``skip`` are stepped past but not read back."""
    os.environ["SUPERTUXKART_DATADIR"] = str(prepare_datadir())
    os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
    import pystk2

    pystk2.set_log_level(pystk2.LogLevel.error)
    graphics = pystk2.GraphicsConfig.ld()
    graphics.screen_width, graphics.screen_height = spec.width, spec.height
    graphics.display = False
    pystk2.init(graphics)

    config = pystk2.RaceConfig()
    while len(config.players):  # the default config holds one human player; we want AI players only
        config.players.pop()
    for index, kart in enumerate(spec.karts):
        player = pystk2.PlayerConfig()
        player.controller = pystk2.PlayerConfig.Controller.AI_CONTROL
        player.kart = kart
        player.camera_mode = (
            pystk2.PlayerConfig.CameraMode.ON if index < spec.views else pystk2.PlayerConfig.CameraMode.OFF
        )
        config.players.append(player)
    config.track = spec.track
    config.num_kart = len(spec.karts)
    config.num_cameras = 0
    config.overlay = False
    config.seed = spec.seed
    config.step_size = spec.step_size
    config.laps = 100  # never finish while we sample

    race = pystk2.Race(config)
    race.start()
    world = pystk2.WorldState()
    cameras = [ChaseCamera() for _ in range(spec.views)]
    step = 0

    def advance():
        nonlocal step
        race.step()
        step += 1
        world.update()
        karts = list(world.karts)
        for index, camera in enumerate(cameras):  # the camera model must see every step (it is smoothed)
            camera.update(karts[index].location, karts[index].rotation, karts[index].speed)

    for _ in range(spec.warmup_steps):
        advance()
    for index in range(spec.frames):
        for _ in range(spec.step_interval):
            advance()
        frame_id = spec.first_frame + index
        if frame_id in skip:
            continue
        render_data = list(race.render_data)
        if len(render_data) != spec.views:
            raise RuntimeError(f"pystk2 returned {len(render_data)} views, expected {spec.views}")
        images = [np.array(view.image, dtype=np.uint8, copy=True) for view in render_data]
        depths = [np.array(view.depth, dtype=np.float32, copy=True) for view in render_data]
        state = _kart_state(world)
        state["time"] = float(world.time)
        karts = list(zip(state["kart_location"], state["kart_rotation"], state["kart_size"]))
        state.update(frame_detections(depths, cameras, karts))
        yield RenderedFrame(frame_id=frame_id, step=step, images=images, state=state)
