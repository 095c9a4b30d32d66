"""The quickstart runs the whole pipeline on the bundled sample (a short version: few steps, few questions)."""

from __future__ import annotations

import json

from stk_vqa.quickstart import SMOKE_TITLE, quickstart


def test_quickstart_end_to_end_on_the_bundled_sample(tmp_path, capsys):
    report_dir = quickstart(work_dir=str(tmp_path / "qs"), max_steps=3, max_eval_samples=24)
    out = capsys.readouterr().out
    assert "1/4 dataset" in out and "4/4 evaluation" in out and "SMOKE RUN" in out
    results = json.loads((tmp_path / "qs" / "report" / "results.json").read_text())
    assert set(results["models"]) == {"blind_prior", "base", "smoke_adapter"}
    assert results["data"]["n_evaluated"] == 24
    assert (tmp_path / "qs" / "adapter" / "adapter_model.safetensors").exists()
    assert SMOKE_TITLE in (tmp_path / "qs" / "report" / "report.md").read_text()
    assert report_dir == str(tmp_path / "qs" / "report")
