"""Evaluation speed, answers/s, on SmolVLM-256M's exact shape (random weights): original style vs stk-vqa's.

Configurations (same questions, same batch size, same device and dtype, one process):
  original        eager attention, the image encoded once per question, 32 new tokens
  eager_budget    eager attention, once per question, new tokens sized to the answers
  sdpa_budget     SDPA, once per question, sized tokens
  ours            SDPA, each image encoded once for all its questions, sized tokens
Random weights never emit <end_of_utterance>, so every configuration runs to its token limit: the token-limit
effect is what `original` vs `eager_budget` shows (a trained model stops on its own after a few tokens).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import time

QUESTIONS = [
    ("What kart is the ego car?", "sara_the_racer"),
    ("How many karts are there in the scenario?", "4"),
    ("What track is this?", "gran_paradiso_island"),
    ("Is nolok to the left or right of the ego car?", "left"),
    ("Is nolok in front of or behind the ego car?", "front"),
    ("Where is nolok relative to the ego car?", "front and left"),
    ("How many karts are to the left of the ego car?", "2"),
    ("How many karts are in front of the ego car?", "1"),
    ("How many karts are behind the ego car?", "0"),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n_images", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--configs", default="original,eager_budget,sdpa_budget,ours")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch
    from PIL import Image

    from stk_vqa.evaluation.inference import answer_token_budget, generate_answers
    from stk_vqa.evaluation.items import EvalItem
    from stk_vqa.evaluation.models import load_models
    from stk_vqa.tiny_model import make_tiny_model

    rng = random.Random(0)
    items = []
    for i in range(args.n_images):
        buf = io.BytesIO()
        Image.frombytes("RGB", (150, 100), bytes(rng.getrandbits(8) for _ in range(150 * 100 * 3))).save(buf, "JPEG")
        for q, a in QUESTIONS:
            items.append(EvalItem(question=q, answer=a, family="f", template=q, image_key=f"img{i}",
                                  image=buf.getvalue(), source=f"{i}"))  # fmt: skip
    folder = os.path.join(tempfile.mkdtemp(), "full")
    make_tiny_model(folder, size="full", seed=0)

    configs = {
        "original": dict(attn="eager", reuse=False, tokens=32),
        "eager_budget": dict(attn="eager", reuse=False, tokens=None),
        "sdpa_budget": dict(attn="sdpa", reuse=False, tokens=None),
        "ours": dict(attn="sdpa", reuse=True, tokens=None),
    }
    results = {"n_questions": len(items), "n_images": args.n_images, "batch_size": args.batch_size, "runs": {}}
    for name in args.configs.split(","):
        cfg = configs[name]
        loaded = load_models(folder, [], device=args.device, dtype=args.dtype, attn_implementation=cfg["attn"])
        tok = loaded.candidates[0].processor.tokenizer
        budget = cfg["tokens"] or answer_token_budget(tok, [it.answer for it in items])
        sync = torch.cuda.synchronize if loaded.device.type == "cuda" else (lambda: None)
        generate_answers(loaded, items[: args.batch_size], batch_size=args.batch_size, max_new_tokens=budget,
                         reuse_vision=cfg["reuse"], progress=False)  # warm-up  # fmt: skip
        sync()
        start = time.perf_counter()
        gens, _ = generate_answers(loaded, items, batch_size=args.batch_size, max_new_tokens=budget,
                                   reuse_vision=cfg["reuse"], progress=False)  # fmt: skip
        sync()
        seconds = time.perf_counter() - start
        n_tokens = sum(g.n_tokens for g in gens["base"])
        peak = torch.cuda.max_memory_allocated() / 2**30 if loaded.device.type == "cuda" else None
        results["runs"][name] = {**cfg, "max_new_tokens": budget, "seconds": round(seconds, 3),
                                 "answers_per_second": round(len(items) / seconds, 2),
                                 "mean_new_tokens": round(n_tokens / len(items), 2), "peak_gib": peak}  # fmt: skip
        results["device"] = str(loaded.device) + (
            f" ({torch.cuda.get_device_name()})" if loaded.device.type == "cuda" else ""
        )
        results["dtype"] = str(loaded.dtype)
        print(name, results["runs"][name], flush=True)
        del loaded
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    runs = results["runs"]
    if "ours" in runs:
        results["speedup_vs"] = {n: round(runs[n]["seconds"] / runs["ours"]["seconds"], 2) for n in runs}
    print(json.dumps(results, indent=2))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    sys.exit(main())
