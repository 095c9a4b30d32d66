"""The learn-to-see benchmark's pipeline (benchmarks/learn_to_see.py) on the bundled sample: a pilot, not the
benchmark itself (that needs ~10^4 rendered views and hours of CPU; see docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import stk_vqa

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = Path(stk_vqa.__file__).parent / "data" / "sample"


@pytest.mark.slow
def test_pilot_runs_every_stage_and_writes_the_results_shape(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for name, source in (("train", "train"), ("valid", "valid"), ("unseen", "valid")):
        (frames / name).symlink_to(SAMPLE / source)
    out = tmp_path / "learn_to_see.json"
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "learn_to_see.py"), "--work_dir", str(tmp_path / "w"),
               "--data_dir", str(frames), "--splits", "train,valid,unseen", "--epochs", "1", "--save_steps", "10",
               "--curve_samples", "40", "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    results = json.loads(out.read_text())
    for split in ("validation", "unseen_tracks"):
        assert results[split]["overall"]["n"] == 388  # the bundled sample's validation questions
        for row in results[split].values():
            assert set(row) == {"n", "prior", "real", "shuffled"}
            assert all(row[k] is None or 0 <= row[k] <= 1 for k in ("prior", "real", "shuffled"))
    # every 10 steps and at the end: 1,149 training rows / batch 32 = 36 steps
    assert set(results["curve"]["real"]) == set(results["curve"]["shuffled"]) == {"10", "20", "30", "36"}
    assert results["minutes"] > 0 and out.with_name("learn_to_see_curve.png").stat().st_size > 10_000
