"""Evaluation on a CUDA device in bfloat16 (``pytest -m gpu``): same answers as on CPU for a trained adapter."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


def test_trained_adapter_scores_100_on_cuda_bf16_with_and_without_vision_reuse(
    tmp_path, tiny_model_dir, color_chat_dataset_dir, trained_color_adapter_dir
):
    from stk_vqa.evaluation.cli import run_evaluation
    from stk_vqa.evaluation.configs import EvalConfig
    from stk_vqa.evaluation.inference import generate_answers
    from stk_vqa.evaluation.items import load_items
    from stk_vqa.evaluation.models import load_models

    results = run_evaluation(EvalConfig(
        data=str(color_chat_dataset_dir), model=str(tiny_model_dir), adapters=[str(trained_color_adapter_dir)],
        split="train", out_dir=str(tmp_path / "report"), with_base=True, device="cuda", dtype="bfloat16",
        progress=False,
    ))  # fmt: skip
    assert results["timing"]["device"].startswith("cuda") and results["timing"]["dtype"] == "bfloat16"
    assert results["models"]["color-lora"]["overall"]["exact_accuracy"] == 1.0

    loaded = load_models(str(tiny_model_dir), [str(trained_color_adapter_dir)], device="cuda", dtype="bfloat16")
    items = [item for item in load_items(color_chat_dataset_dir, split="train") for _ in range(3)]
    reused, _ = generate_answers(loaded, items, batch_size=8, progress=False)
    per_question, _ = generate_answers(loaded, items, batch_size=8, reuse_vision=False, progress=False)
    assert [g.text for g in reused["color-lora"]] == [g.text for g in per_question["color-lora"]]
    assert [g.text for g in reused["color-lora"]] == [item.answer for item in items]
