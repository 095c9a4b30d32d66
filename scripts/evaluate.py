#!/usr/bin/env python
"""Benchmark a base model and LoRA adapters; the same as ``stk-vqa evaluate`` (see ``--help``).

    python scripts/evaluate.py --data data/stk-vqa --adapters runs/smolvlm-lora --with_base --out_dir reports/lora
"""

from stk_vqa.evaluation.cli import evaluate

if __name__ == "__main__":
    import fire

    fire.Fire(evaluate, name="evaluate.py")
