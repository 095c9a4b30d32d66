"""The quickstart runs the whole pipeline on the bundled sample, and its smoke adapter learns something."""

from __future__ import annotations

import json

from stk_vqa.quickstart import SMOKE_TITLE, QuickstartConfig, quickstart


def test_quickstart_end_to_end_on_the_bundled_sample(tmp_path, capsys):
    report_dir = quickstart(QuickstartConfig(work_dir=str(tmp_path / "qs")))
    out = capsys.readouterr().out
    assert "1/4 dataset" in out and "4/4 evaluation" in out and "SMOKE RUN" in out
    results = json.loads((tmp_path / "qs" / "report" / "results.json").read_text())
    assert set(results["models"]) == {"blind_prior", "base", "smoke_adapter"}
    assert results["data"]["n_evaluated"] == 388  # the bundled sample's validation QA pairs
    assert (tmp_path / "qs" / "adapter" / "adapter_model.safetensors").exists()
    assert SMOKE_TITLE in (tmp_path / "qs" / "report" / "report.md").read_text()
    assert report_dir == str(tmp_path / "qs" / "report")
    overall = {name: results["models"][name]["overall"]["exact_accuracy"] for name in results["models"]}
    # the random-init base answers nothing; the trained adapter learns the per-question answer prior
    assert overall["base"] < 0.05
    assert overall["smoke_adapter"] >= 0.9 * overall["blind_prior"] > 0.3
