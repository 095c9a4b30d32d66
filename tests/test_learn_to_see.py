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
    # rows_per_image: 3 (the recipe): 3 rows of each training image (every image has >= 7) per epoch, batches of 32;
    # a checkpoint every 10 steps and at the end
    from datasets import load_dataset

    images = len(set(load_dataset(str(tmp_path / "w" / "dataset"), split="train")["image_file"]))
    steps = -(-3 * images // 32)
    assert 100 < images <= 120 and steps > 10
    assert set(results["curve"]["real"]) == set(results["curve"]["shuffled"]) == {"10", str(steps)}
    assert results["views"] == {"train": 120, "valid": 40, "unseen": 40}  # the sample's 24 + 8 frames x 5 views
    assert set(results["stage_minutes"]) == {"render", "build", "train_real", "train_shuffled", "evaluate"}
    assert results["minutes"] == pytest.approx(sum(results["stage_minutes"].values()), abs=0.3)
    assert results["minutes"] > 0 and out.with_name("learn_to_see_curve.png").stat().st_size > 10_000

    # a second call finds every stage done and adds (almost) nothing to the recorded minutes
    again = subprocess.run(command, capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(out.read_text())["minutes"] == pytest.approx(results["minutes"], abs=0.2)

    # the kart-presence probe on the pilot's dataset: both models train and are scored against the majority answer
    probe_out = tmp_path / "probe.json"
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "kart_presence_probe.py"), "--dataset",
               str(tmp_path / "w" / "dataset"), "--steps", "4", "--eval_every", "2", "--batch_size", "8",
               "--out", str(probe_out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]
    probe = json.loads(probe_out.read_text())
    assert probe["train_images"] == images and 30 < probe["validation_images"] <= 40 and probe["image_visits"] == 32
    assert 0.5 <= probe["majority"] <= 1
    for name, side in (("siglip", 192), ("cnn", 128)):
        assert probe[name]["side"] == side and set(probe[name]["curve"]) == {"2", "4"}
        assert 0 <= probe[name]["final"] <= 1


@pytest.mark.parametrize("flag", [["--steps", "0"], ["--batch_size", "-1"], ["--eval_every", "0"], ["--lr", "0"]])
def test_probe_refuses_a_bad_flag_in_one_line(flag):
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "kart_presence_probe.py"), *flag]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{flag[0]} must be" in result.stderr.strip().splitlines()[-1]
