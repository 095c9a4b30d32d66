"""Evaluation: benchmark a base model and LoRA adapters on a QA split, with per-family reports.

One module, one job:

* :mod:`.items`: the evaluation items (DatasetDict folder / Hub id, or a legacy ``{image_file, question,
  answer}`` json with its data folder), sampling, question templates;
* :mod:`.metrics`: the course's prefix rule, normalised exact match, per-family scores, confusion tables, MAE;
* :mod:`.baselines`: the blind prior (most frequent training answer per question template);
* :mod:`.models`: base model + adapters from disk or the Hub, with clear errors;
* :mod:`.inference`: batched greedy generation, the vision encoder run once per image;
* :mod:`.report`: ``results.json``, ``report.md``, the bar chart, ``predictions.jsonl``, the console table;
* :mod:`.cli`: ``stk-vqa evaluate`` / ``test`` / ``ask``.

Only :mod:`.models`, :mod:`.inference` and :mod:`.cli` (inside functions) import torch and transformers.
"""
