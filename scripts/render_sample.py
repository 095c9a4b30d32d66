"""Re-render the bundled sample (stk_vqa/data/sample/) and the rendered-frame test fixture (tests/data/render/).

Sample: train = lighthouse, abyss, cocoa_temple, zengarden (6 frames each), valid = hacienda, snowtuxpeak
(4 frames each); 10 karts, 5 views, 150x100 JPEGs, boxes from the engine's instance maps.
Fixture: one frame (3 views) with its instance maps as compressed .npz files. Needs `make render-deps`.
Usage: python scripts/render_sample.py [SAMPLE_DIR] [FIXTURE_DIR]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import stk_vqa
from stk_vqa.render.cli import render
from stk_vqa.render.config import RenderConfig

TRAIN = "lighthouse,abyss,cocoa_temple,zengarden"
VALID = "hacienda,snowtuxpeak"


def main(sample_dir: str = "", fixture_dir: str = "tests/data/render") -> None:
    sample = Path(sample_dir or Path(stk_vqa.__file__).parent / "data" / "sample")
    for split, tracks, frames, seed in (("train", TRAIN, 6, 0), ("valid", VALID, 4, 1)):
        shutil.rmtree(sample / split, ignore_errors=True)
        lost = render(
            RenderConfig(
                out=str(sample), split=split, tracks=tracks, frames=frames, views=5, karts=10, seed=seed, workers=2
            )
        )
        if lost:
            raise SystemExit(f"sample {split}: frames lost: {lost}")
    fixture = Path(fixture_dir)
    shutil.rmtree(fixture / "frame", ignore_errors=True)
    if render(
        RenderConfig(
            out=str(fixture), split="frame", tracks="lighthouse", frames=1, views=3, karts=6, seed=5, instances=True
        )
    ):
        raise SystemExit("fixture frame lost")
    for path in (fixture / "frame").iterdir():  # keep the info file and the instance maps (a few KB); no JPEGs
        if path.suffix == ".jpg" or path.name.startswith("."):
            path.unlink()
        else:
            path.rename(fixture / path.name)
    (fixture / "frame").rmdir()


if __name__ == "__main__":
    main(*sys.argv[1:])
