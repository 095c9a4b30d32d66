"""Options of ``stk-vqa render`` (parsed by ``HfArgumentParser`` like every stk-vqa command)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RenderConfig:
    """Render fresh frames from SuperTuxKart into <out>/<split>/ in the course layout."""

    out: str = field(default="data/rendered", metadata={
        "help": "Data folder; frames go to <out>/<split>/ (<frame>_info.json, <frame>_<view:02d>_im.jpg)."})
    split: str = field(default="train", metadata={"help": "Split folder name (train, valid, ...)."})
    tracks: str | None = field(default=None, metadata={
        "help": "Track names, comma or space separated; default: every course track the game data has."})
    frames: int = field(default=10, metadata={"help": "Frames per track (one race per track); ids unique and stable."})
    views: int = field(default=10, metadata={"help": "Cameras per frame (view i follows kart i); at most karts."})
    karts: int = field(default=10, metadata={"help": "Karts per race, all AI-driven."})
    seed: int = field(default=0, metadata={"help": "Seed of the kart line-ups and the races."})
    kart_names: str | None = field(default=None, metadata={
        "help": "Kart names to use (cycled), comma separated; default: a seeded random line-up per race."})
    width: int = field(default=150, metadata={"help": "Image width (the course's is 150); boxes stay in 600x400."})
    height: int = field(default=100, metadata={"help": "Image height (the course's is 100)."})
    workers: int = field(default=1, metadata={"help": "Races rendered at once, each in its own process."})
    warmup_steps: int = field(default=150, metadata={"help": "Steps skipped at the start of each race."})
    step_interval: int = field(default=10, metadata={"help": "Steps between sampled frames (0.1 s of game time each)."})
    stall_timeout: float = field(default=600.0, metadata={
        "help": "Seconds without a finished frame after which a race is killed (a re-run resumes it)."})
