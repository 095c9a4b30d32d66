#!/usr/bin/env python
"""Can a vision model trained from scratch see the other karts, at the learn-to-see benchmark's data scale?

The learn-to-see benchmark's model learns the track from pixels but stays near the prior on counting and on where
the other karts are. This probe takes the language model out: one binary question per image, "is any kart other
than the ego visible?" (``kart_count >= 2``, the course's visibility rule), answered from the pixels alone by

* ``siglip``: the benchmark's vision tower (the ``stk-vqa make-tiny-model --size small`` SigLIP, random weights,
  192 px) with a linear head on its mean-pooled patch features, trained end to end;
* ``cnn`` (the named baseline): a 4-layer convolutional net with global max pooling, the inductive bias best suited
  to finding a small object anywhere, at 128 px.

Both see the same training images in the same order (AdamW, lr 1e-3, batch 64, one question per image) and are scored
on the validation split's images against the majority answer. If neither rises well above the majority answer in
about as many image visits as the benchmark's training gets, the benchmark's spatial families are limited by learning
to see small karts from scratch, not by the language side or the pipeline.

    python benchmarks/kart_presence_probe.py --dataset outputs/learn_to_see/dataset --steps 600

Writes ``benchmarks/results/kart_presence_probe.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def presence_images(dataset, side: int):
    """Images (``[-1, 1]``, ``side`` square) and labels (another kart visible) of the ``kart_count`` rows."""
    import numpy as np
    import torch

    rows = dataset.filter(lambda family: family == "kart_count", input_columns="family")
    pixels = np.stack([np.asarray(row[0].convert("RGB").resize((side, side))) for row in rows["images"]])
    labels = np.array([int(answer) >= 2 for answer in rows["answer"]])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1), torch.from_numpy(labels).long()


def siglip_probe(seed: int):
    """The small shape's SigLIP tower (random, seeded) with a linear head on the mean of its patch features."""
    import torch

    from stk_vqa.tiny_model import build_model, build_tokenizer

    tower = build_model(build_tokenizer(), size="small", seed=seed).model.vision_model.train()
    head = torch.nn.Linear(tower.config.hidden_size, 2)

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tower, self.head = tower, head

        def forward(self, pixels):
            return self.head(self.tower(pixel_values=pixels).last_hidden_state.mean(1))

    return Probe(), int(tower.config.image_size)


def cnn_probe(seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    width = 32
    net = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        nn.Linear(2 * width, 2),
    )  # fmt: skip
    return net, 128


def train_probe(name: str, model, side: int, train, validation, args) -> dict:
    """Train on the training images in a fixed order; validation accuracy every ``eval_every`` steps."""
    import torch

    (train_x, train_y), (valid_x, valid_y) = train(side), validation(side)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(args.seed))
    curve, started = {}, time.perf_counter()

    def accuracy() -> float:
        model.eval()
        with torch.no_grad():
            correct = sum(
                (model(valid_x[i : i + 256]).argmax(-1) == valid_y[i : i + 256]).sum().item()
                for i in range(0, len(valid_y), 256)
            )
        model.train()
        return correct / len(valid_y)

    for step in range(1, args.steps + 1):
        picks = order[torch.arange((step - 1) * args.batch_size, step * args.batch_size) % len(order)]
        loss = torch.nn.functional.cross_entropy(model(train_x[picks]), train_y[picks])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.eval_every == 0 or step == args.steps:
            curve[step] = round(accuracy(), 4)
            print(f"{name}: step {step} loss {loss.item():.3f} validation {curve[step]:.3f}", flush=True)
    return {"side": side, "curve": curve, "final": curve[args.steps], "seconds": round(time.perf_counter() - started)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="outputs/learn_to_see/dataset", help="the benchmark's built dataset")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval_every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "kart_presence_probe.json"))
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "eval_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not 0 < args.lr < 1:
        parser.error(f"--lr must be between 0 and 1, got {args.lr}")

    import torch
    from datasets import load_dataset

    from stk_vqa.fileio import atomic_write_json

    torch.manual_seed(args.seed)
    data = load_dataset(args.dataset)
    cached: dict = {}

    def split_at(split: str):
        def load(side: int):
            if (split, side) not in cached:
                cached[split, side] = presence_images(data[split], side)
            return cached[split, side]

        return load

    train, validation = split_at("train"), split_at("validation")
    valid_y = validation(128)[1]
    majority = max(valid_y.float().mean().item(), 1 - valid_y.float().mean().item())
    results = {
        "task": "another kart visible (kart_count >= 2), image only",
        "train_images": len(train(128)[1]),
        "validation_images": len(valid_y),
        "image_visits": args.steps * args.batch_size,
        "majority": round(majority, 4),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
    }
    siglip, side = siglip_probe(args.seed)
    results["siglip"] = train_probe("siglip", siglip, side, train, validation, args)
    cnn, side = cnn_probe(args.seed)
    results["cnn"] = train_probe("cnn", cnn, side, train, validation, args)
    atomic_write_json(args.out, results)
    print(
        f"majority {majority:.3f}; siglip {results['siglip']['final']:.3f}; cnn {results['cnn']['final']:.3f} "
        f"after {results['image_visits']} image visits -> {args.out}"
    )
    return results


if __name__ == "__main__":
    main()
