"""The pre-processed input path (stk_vqa.training.preprocess, image_transforms): rows tokenised once collate to exactly
TRL's collator output, the device-side image processing is Pillow's to the bit, the image-grouping sampler keeps an
image's rows together, and in-batch reuse turns itself off when it cannot fire (tiny offline model, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOKE_RECIPE = REPO_ROOT / "recipes" / "smoke_cpu.yaml"
PAIRS = [
    ("What kart is the ego car?", "tux"),
    ("How many karts are there in the scenario?", "4"),
    ("Is nolok in front of or behind the ego car?", "front"),
    ("Where is nolok relative to the ego car?", "front and left"),
]


def noise_image(seed: int, size=(150, 100)):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def save_split_rows(out: Path, splits: dict[str, list[tuple]]) -> Path:
    """Rows ``(image, [(question, answer), ...])`` in the builder's format (one or several QA turns per row)."""
    import datasets

    from stk_vqa.data.rows import chat_messages

    text = datasets.Value("string")
    features = datasets.Features(
        {"images": datasets.Sequence(datasets.Image()), "messages": [{"role": text, "content": [{"type": text, "text": text}]}]}
    )  # fmt: skip
    (out / "data").mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        table = {"images": [[image] for image, _ in rows], "messages": [chat_messages(pairs) for _, pairs in rows]}
        datasets.Dataset.from_dict(table, features=features).to_parquet(str(out / "data" / f"{split}-00000-of-00001.parquet"))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def mixed_rows_dir(tmp_path_factory) -> Path:
    """4 images x 4 single-QA rows (answers of different lengths) plus 2 multi-turn rows; images of two sizes."""
    images = [noise_image(i) for i in range(3)] + [noise_image(3, size=(96, 64))]
    train = [(image, [pair]) for image in images for pair in PAIRS]
    train += [(images[0], PAIRS[:3]), (images[3], PAIRS[1:])]
    validation = [(noise_image(9), [pair]) for pair in PAIRS[:2]]
    return save_split_rows(tmp_path_factory.mktemp("mixed_rows"), {"train": train, "validation": validation})


def build(tiny_model_dir, dataset_dir, out: Path, *extra: str):
    from stk_vqa.scripts.sft import build_trainer
    from stk_vqa.training.configs import parse_recipe

    argv = [str(SMOKE_RECIPE), "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(dataset_dir),
            "--output_dir", str(out), "--report_to", "none", "--disable_tqdm", "true", *extra]  # fmt: skip
    return build_trainer(*parse_recipe(argv))


# ---------------------------------------------------------------------------------------------------------------------


def start_from(trainer, start: dict) -> dict:
    """Set the trainer's model to the same starting weights (``start``: name -> tensor), train mode, no gradients;
    return its parameters by name."""
    import torch

    params = dict(trainer.model.named_parameters())
    with torch.no_grad():
        for name, value in start.items():
            params[name].copy_(value)
    trainer.model.train()
    trainer.model.zero_grad()
    return params


def test_preprocessed_rows_collate_exactly_like_trls_collator_and_train_the_same(
    tiny_model_dir, mixed_rows_dir, tmp_path
):
    import torch

    plain = build(tiny_model_dir, mixed_rows_dir, tmp_path / "plain", "--vision_feature_reuse", "false")
    ours = build(tiny_model_dir, mixed_rows_dir, tmp_path / "ours", "--preprocess_rows", "true")
    cached = build(tiny_model_dir, mixed_rows_dir, tmp_path / "cached", "--preprocess_rows", "true",
                   "--vision_feature_cache", str(tmp_path / "f.safetensors"))  # fmt: skip
    assert set(ours.train_dataset.column_names) == {"input_ids", "labels", "image_keys", "images"}
    assert len(ours.train_dataset) == len(plain.train_dataset) == 18

    # short and long rows, multi-turn rows, two image sizes, repeated images
    picks = [16, 0, 5, 17, 3, 1, 12]
    reference = plain.data_collator([dict(plain.train_dataset[i]) for i in picks])
    for trainer in (ours, cached):
        batch = trainer.data_collator([trainer.train_dataset[i] for i in picks])
        for key in ("input_ids", "labels", "attention_mask"):
            assert torch.equal(batch[key], reference[key]), key
        assert "pixel_values" not in batch and batch["image_index"].tolist() == [0, 0, 1, 2, 0, 0, 2]
    assert (reference["labels"] != -100).sum() > 0 and (reference["attention_mask"] == 0).sum() > 0

    # the same loss and LoRA gradients: pixels processed on the device / features from the cache
    generator = torch.Generator().manual_seed(0)
    names = [n for n, p in plain.model.named_parameters() if p.requires_grad]
    start = {
        n: torch.randn(p.shape, generator=generator) * 0.05 for n, p in plain.model.named_parameters() if n in names
    }
    results = {}
    for name, trainer in (("plain", plain), ("ours", ours), ("cached", cached)):
        params = start_from(trainer, start)
        rows = plain.train_dataset if name == "plain" else trainer.train_dataset
        batch = trainer.data_collator([dict(rows[i]) for i in picks])
        loss = trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))
        loss.backward()
        results[name] = (loss.detach(), {n: params[n].grad.clone() for n in names})
    for name in ("ours", "cached"):
        torch.testing.assert_close(results[name][0], results["plain"][0], rtol=1e-5, atol=1e-6)
        for n in names:
            torch.testing.assert_close(results[name][1][n], results["plain"][1][n], rtol=1e-4, atol=1e-6)


def test_pad_to_multiple_of_matches_trl(tiny_model_dir, mixed_rows_dir, tmp_path):
    import torch

    plain = build(tiny_model_dir, mixed_rows_dir, tmp_path / "p", "--pad_to_multiple_of", "16")
    ours = build(
        tiny_model_dir, mixed_rows_dir, tmp_path / "o", "--pad_to_multiple_of", "16", "--preprocess_rows", "true"
    )
    picks = [0, 17, 6]
    reference = plain.data_collator([dict(plain.train_dataset[i]) for i in picks])
    batch = ours.data_collator([ours.train_dataset[i] for i in picks])
    assert reference["input_ids"].shape[1] % 16 == 0
    for key in ("input_ids", "labels", "attention_mask"):
        assert torch.equal(batch[key], reference[key]), key


@pytest.mark.parametrize("size", [128, 512])
def test_device_image_processing_is_pillows_bit_for_bit(tiny_model_dir, size):
    """Upscales (the course's 150x100 and odd sizes) and a downscale, against the processor's PIL path."""
    import numpy as np
    import torch
    from transformers import AutoProcessor

    from stk_vqa.training.image_transforms import DeviceImageProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    image_processor = processor.image_processor
    image_processor.do_image_splitting = False
    image_processor.size = image_processor.max_image_size = {"longest_edge": size}
    device = DeviceImageProcessor(image_processor)
    for seed, shape in enumerate([(150, 100), (150, 100), (77, 201), (640, 300)]):
        image = noise_image(seed, shape)
        want = image_processor(images=[[image]], return_tensors="pt")["pixel_values"]
        got = device(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None])
        assert got.shape == want.shape == (1, 1, 3, size, size) and got.dtype == want.dtype
        assert float((got - want).abs().max()) == 0.0, shape


def test_image_grouped_sampler_keeps_each_images_rows_together():
    from stk_vqa.training.preprocess import ImageGroupedSampler

    keys = [f"img{(i * 7) % 11}" for i in range(60)]  # 11 images, 5-6 rows each, interleaved
    sampler = ImageGroupedSampler(keys, seed=3)
    orders = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(60)) and len(sampler) == 60
        runs = [keys[i] for n, i in enumerate(order) if n == 0 or keys[i] != keys[order[n - 1]]]
        assert len(runs) == len(set(runs)) == 11  # every image's rows are one contiguous run
        orders.append(order)
    assert orders[0] != orders[1]  # reshuffled per epoch
    sampler.set_epoch(0)
    assert list(sampler) == orders[0]  # and reproducible


def test_grouped_sampler_takes_at_most_k_rows_per_image_and_a_new_pick_each_epoch():
    from stk_vqa.training.configs import RecipeError, StkScriptArguments
    from stk_vqa.training.preprocess import ImageGroupedSampler

    keys = [f"img{i % 10}" for i in range(10)] + [f"img{i % 8}" for i in range(80)]  # 8 images x 11 rows, 2 x 1 row
    sampler = ImageGroupedSampler(keys, seed=1, rows_per_image=3)
    assert len(sampler) == 8 * 3 + 2
    seen = set()
    for epoch in range(6):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == len(sampler) == len(set(order))
        per_image = {key: sum(1 for i in order if keys[i] == key) for key in set(keys)}
        assert per_image == {key: (3 if key in {f"img{i}" for i in range(8)} else 1) for key in set(keys)}
        runs = [keys[i] for n, i in enumerate(order) if n == 0 or keys[i] != keys[order[n - 1]]]
        assert len(runs) == len(set(runs)) == 10  # still one contiguous run per image
        seen.update(order)
    assert len(seen) > 60  # different rows picked in different epochs
    with pytest.raises(RecipeError, match="group_batches_by_image"):
        StkScriptArguments(dataset_name="d", rows_per_image=3)
    with pytest.raises(RecipeError, match="rows_per_image"):
        StkScriptArguments(dataset_name="d", rows_per_image=0, group_batches_by_image=True)


def test_in_batch_reuse_turns_off_when_batches_rarely_repeat_an_image(tiny_model_dir, mixed_rows_dir, tmp_path):
    from stk_vqa.training.preprocess import ImageGroupedSampler, expected_reuse, row_keys

    # 100k images x 9 questions, random batches of 32: almost nothing to reuse; grouped: most of the encodes saved
    keys = [i // 9 for i in range(900_000)]
    assert expected_reuse(keys, 32) < 0.01 and expected_reuse(keys, 32, grouped=True) > 0.8

    unique_dir = save_split_rows(tmp_path / "unique", {"train": [(noise_image(i), [PAIRS[0]]) for i in range(40)]})
    off = build(tiny_model_dir, unique_dir, tmp_path / "off", "--vision_feature_reuse", "true", "--eval_strategy", "no")
    core = off.model.base_model.model.model
    assert not getattr(core, "stk_in_batch_reuse", False)
    grouped = build(tiny_model_dir, mixed_rows_dir, tmp_path / "on", "--vision_feature_reuse", "true",
                    "--group_batches_by_image", "true")  # fmt: skip
    assert getattr(grouped.model.base_model.model.model, "stk_in_batch_reuse", False)
    sampler = grouped._get_train_sampler()
    assert isinstance(sampler, ImageGroupedSampler) and len(sampler) == len(grouped.train_dataset)
    one = build(tiny_model_dir, mixed_rows_dir, tmp_path / "one", "--vision_feature_reuse", "true",
                "--group_batches_by_image", "true", "--rows_per_image", "1")  # fmt: skip
    images = len(set(row_keys(one.train_dataset)))
    assert len(one._get_train_sampler()) == images < len(one.train_dataset)
    assert len(one.get_train_dataloader()) == -(-images // one.args.per_device_train_batch_size)


def test_preprocessed_rows_train_a_trainable_vision_tower_like_the_plain_path(tiny_model_dir, mixed_rows_dir, tmp_path):
    """LoRA on the vision tower too (lora_scope: all): pre-processed rows encode each distinct image of a batch once,
    with gradients, and give the plain path's loss and gradients on every LoRA matrix, vision ones included."""
    import torch

    plain = build(
        tiny_model_dir, mixed_rows_dir, tmp_path / "p", "--lora_scope", "all", "--vision_feature_reuse", "false"
    )
    ours = build(tiny_model_dir, mixed_rows_dir, tmp_path / "o", "--lora_scope", "all", "--preprocess_rows", "true")
    names = [n for n, p in plain.model.named_parameters() if p.requires_grad]
    assert any("vision_model" in n for n in names)
    generator = torch.Generator().manual_seed(0)
    start = {
        n: torch.randn(p.shape, generator=generator) * 0.05 for n, p in plain.model.named_parameters() if n in names
    }
    picks = [16, 0, 5, 17, 3, 1, 12]  # repeated images, two image sizes
    results = {}
    for name, trainer in (("plain", plain), ("ours", ours)):
        params = start_from(trainer, start)
        batch = trainer.data_collator([dict(trainer.train_dataset[i]) for i in picks])
        loss = trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))
        loss.backward()
        results[name] = (loss.detach(), {n: params[n].grad.clone() for n in names})
    torch.testing.assert_close(results["ours"][0], results["plain"][0], rtol=1e-5, atol=1e-6)
    vision = [n for n in names if "vision_model" in n]
    assert all(results["plain"][1][n].abs().sum() > 0 for n in vision)
    for n in names:
        torch.testing.assert_close(results["ours"][1][n], results["plain"][1][n], rtol=1e-4, atol=1e-6)
