"""The training benchmark scripts: ``benchmarks/gpu.sh`` (dry run on the CPU, tiny model) and the grouped-rows leakage
count. No speed is asserted here; the figures live in ``benchmarks/results/``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_leakage_rules_find_answers_implied_by_earlier_turns():
    from stk_vqa.data.leakage import derivable_from_earlier
    from stk_vqa.data.questions import QAPair

    row = [
        ("How many karts are there in the scenario?", "3", "kart_count"),
        ("Where is tux relative to the ego car?", "front and left", "relative_position"),  # nothing known yet
        ("Is tux to the left or right of the ego car?", "left", "left_right"),
        ("Is tux in front of or behind the ego car?", "front", "front_back"),
        ("Where is tux relative to the ego car?", "front and left", "relative_position"),  # implied
        ("How many karts are to the left of the ego car?", "1", "directional_count"),  # only 1 of 2 others known
        ("Is nolok to the left or right of the ego car?", "right", "left_right"),
        ("How many karts are to the left of the ego car?", "1", "directional_count"),  # implied: tux only
        ("How many karts are to the right of the ego car?", "2", "directional_count"),  # wrong gold: not counted
    ]
    pairs = [QAPair(question=q, answer=a, family=f) for q, a, f in row]
    assert derivable_from_earlier(pairs) == [False, False, False, False, True, False, False, True, False]


@pytest.mark.slow
def test_gpu_script_dry_run_on_cpu_writes_ratios_against_the_baseline(tmp_path):
    """``benchmarks/gpu.sh OUT --device cpu --tiny``: the GPU script's steps on the tiny model (about a minute)."""
    env = dict(os.environ, PYTHON=sys.executable, THREADS="1")
    result = subprocess.run(["bash", str(REPO_ROOT / "benchmarks" / "gpu.sh"), str(tmp_path), "--device", "cpu", "--tiny"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    figures = json.loads((tmp_path / "train_cpu.json").read_text())
    results = figures["results"]
    assert figures["baseline"] == "original" and set(results) == {
        "original",
        "ours_no_cache",
        "ours_cache",
        "ours_grouped_cache",
    }
    assert results["original"]["speedup_vs_original"] == 1.0
    for _name, entry in results.items():
        assert entry["qa_pairs_per_s"] > 0 and entry["peak_rss_mb"] > 100
        assert entry["speedup_vs_original"] == pytest.approx(
            entry["qa_pairs_per_s"] / results["original"]["qa_pairs_per_s"], rel=0.01
        )
    # the cache really replaces the vision tower in the step; without it each distinct image of a batch is encoded
    # once (batches grouped by image: 9 questions per image), the original encodes every row's
    assert results["ours_cache"]["images_encoded_per_step"] == 0
    assert results["original"]["images_encoded_per_step"] == 2
    assert 1 <= results["ours_no_cache"]["images_encoded_per_step"] < 2
    assert figures["cache_build"]["images"] == 5  # 2 per-pair images (10 rows); the 5 grouped rows' images include them
    for name in ("original", "ours_no_cache", "ours_cache"):
        assert results[name]["host_ops_per_step"] > 100 and results[name]["profile_top_host_ops"]
    assert (tmp_path / "input_path_cpu.json").is_file()
    assert results["ours_grouped_cache"]["qa_pairs_timed"] == 2 * 9  # 2 timed steps of one 9-turn row
