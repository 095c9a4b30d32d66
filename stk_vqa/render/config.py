"""Options of ``stk-vqa render`` (parsed by ``HfArgumentParser`` like every stk-vqa command; :func:`render` takes
this dataclass)."""

from __future__ import annotations

from dataclasses import dataclass, field

from stk_vqa.data.configs import check_name, check_range


@dataclass
class RenderConfig:
    """Render fresh frames from SuperTuxKart into <out>/<split>/ in the course layout, boxes from the engine."""

    out: str = field(
        default="data/rendered",
        metadata={"help": "Data folder; frames go to <out>/<split>/ (<frame>_info.json, <frame>_<view:02d>_im.jpg)."},
    )
    split: str = field(default="train", metadata={"help": "Split folder name (train, valid, ...)."})
    tracks: str | None = field(
        default=None,
        metadata={"help": "Track names, comma or space separated; default: every course track the game data has."},
    )
    frames: int = field(
        default=10,
        metadata={"help": "Frames per track; track t owns frame ids t*frames..: unique across tracks and stable."},
    )
    views: int = field(
        default=10,
        metadata={"help": "Cameras per frame; view i follows player i, whose kart id is view_kart[i] in info.json."},
    )
    karts: int = field(
        default=10,
        metadata={
            "help": "Karts per race (the first `views` carry the cameras; the game picks the models of the others)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the camera karts' models and the races."})
    kart_names: str | None = field(
        default=None,
        metadata={
            "help": "Models for the camera karts (cycled), comma separated; default: a seeded random choice per race."
        },
    )
    width: int = field(
        default=150,
        metadata={"help": "Stored image width (the course's is 150); views are rendered at 600x400, the boxes' space."},
    )
    height: int = field(default=100, metadata={"help": "Stored image height (the course's is 100)."})
    workers: int = field(default=1, metadata={"help": "Races rendered at once, each in its own process."})
    warmup_steps: int = field(
        default=150, metadata={"help": "Steps skipped at the start of each race (countdown and start bunching)."}
    )
    step_interval: int = field(
        default=10, metadata={"help": "Steps between sampled frames (0.1 s of game time per step)."}
    )
    race_frames: int = field(
        default=100, metadata={"help": "Frames per race (a track's frames are split into races of this many)."}
    )
    shard: str | None = field(
        default=None,
        metadata={"help": "K/N: render only the K-th of N disjoint parts (by race), so N machines share one dataset."},
    )
    stall_timeout: float = field(
        default=300.0,
        metadata={"help": "Seconds without a finished frame after which a race is killed (a re-run resumes it)."},
    )
    instances: bool = field(
        default=False,
        metadata={"help": "Also write each view's 600x400 instance map (<frame>_<view:02d>_instance.npz)."},
    )
    render_every_step: bool = field(
        default=False,
        metadata={
            "help": "Draw every 0.1 s step instead of one engine step per sampled frame (the chase camera then lags as "
            "in interactive play; step_interval times slower)."
        },
    )
    anisotropic: bool = field(
        default=False,
        metadata={
            "help": "Keep Mesa's anisotropic filtering (stalls for minutes under llvmpipe; a benchmark baseline)."
        },
    )

    def __post_init__(self):
        from stk_vqa.render.cli import parse_shard

        check_name("split", self.split, "a split folder name")
        if not str(self.out).strip():
            raise ValueError("--out: empty")
        for name, low, high in (("frames", 1, 1 << 20), ("views", 1, 64), ("karts", 1, 64), ("width", 1, 4096),
                                ("height", 1, 4096), ("workers", 1, 64), ("warmup_steps", 0, 100_000),
                                ("step_interval", 1, 10_000), ("race_frames", 1, 1 << 20)):  # fmt: skip
            check_range(name, getattr(self, name), low, high)
        if not self.stall_timeout > 0:
            raise ValueError(f"--stall_timeout {self.stall_timeout!r}: must be > 0 seconds")
        parse_shard(self.shard)
