#!/usr/bin/env python
"""Benchmark a base model and LoRA adapters (the same as ``stk-vqa evaluate``; ``--help`` lists the fields).

python scripts/evaluate.py --data data/stk-vqa --adapters runs/smolvlm-lora --with_base --out_dir reports/lora
"""

from stk_vqa.cli import main

if __name__ == "__main__":
    import sys

    main(["evaluate", *sys.argv[1:]])
