"""Vision-feature reuse (stk_vqa.training.vision_features): in-batch reuse and the offline cache give the same loss and the
same LoRA gradients as encoding every row's image, on the tiny offline model (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOKE_RECIPE = REPO_ROOT / "recipes" / "smoke_cpu.yaml"
QUESTIONS = [
    ("What color is the image?", "red"),
    ("How many karts are there in the scenario?", "3"),
    ("Is tux to the left or right of the ego car?", "left"),
]


def noise_image(seed: int, size=(150, 100)):
    import random

    from PIL import Image

    rng = random.Random(seed)
    return Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))


def qa_row(image, question: str, answer: str) -> dict:
    return {
        "images": [image],
        "messages": [
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
    }


def save_rows(out: Path, splits: dict[str, list[dict]]) -> Path:
    import datasets

    features = datasets.Features(
        {
            "images": datasets.Sequence(datasets.Image()),
            "messages": [
                {
                    "role": datasets.Value("string"),
                    "content": [{"type": datasets.Value("string"), "text": datasets.Value("string")}],
                }
            ],
        }
    )
    (out / "data").mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        table = {"images": [r["images"] for r in rows], "messages": [r["messages"] for r in rows]}
        datasets.Dataset.from_dict(table, features=features).to_parquet(
            str(out / "data" / f"{split}-00000-of-00001.parquet")
        )
    return out


@pytest.fixture(scope="module")
def shared_images_dataset_dir(tmp_path_factory) -> Path:
    """Per-pair rows: 3 train images x 3 questions (9 rows), 1 validation image x 2 questions."""
    train = [qa_row(noise_image(i), q, a) for i in range(3) for q, a in QUESTIONS]
    validation = [qa_row(noise_image(10), q, a) for q, a in QUESTIONS[:2]]
    return save_rows(tmp_path_factory.mktemp("shared_images"), {"train": train, "validation": validation})


def build(tiny_model_dir, dataset_dir, out: Path, *extra: str):
    from stk_vqa.scripts.sft import build_trainer
    from stk_vqa.training.configs import parse_recipe

    argv = [str(SMOKE_RECIPE), "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(dataset_dir),
            "--output_dir", str(out), "--report_to", "none", "--disable_tqdm", "true", *extra]  # fmt: skip
    return build_trainer(*parse_recipe(argv))


def lora_parameters(model) -> dict:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------------------------------------------------------------


def test_distinct_rows_finds_duplicates_in_first_occurrence_order():
    import torch

    from stk_vqa.training.vision_features import distinct_rows

    a, b, c = (torch.full((1, 3, 4, 4), v) for v in (0.5, -1.0, 2.0))
    pixels = torch.stack([b, a, b, c, a])  # rows: b a b c a
    first, inverse = distinct_rows(pixels)
    assert first.tolist() == [0, 1, 3] and inverse.tolist() == [0, 1, 0, 2, 1]
    # a differing pixel mask makes rows distinct
    mask = torch.ones(5, 1, 4, 4, dtype=torch.bool)
    mask[2, 0, 0, 0] = False
    assert distinct_rows(pixels, mask)[1].tolist() == [0, 1, 2, 3, 1]


def test_reuse_and_cache_give_the_same_loss_and_lora_gradients(tiny_model_dir, shared_images_dataset_dir, tmp_path):
    import torch

    from stk_vqa.training.vision_features import count_encoded_images

    dataset = shared_images_dataset_dir
    plain = build(tiny_model_dir, dataset, tmp_path / "plain", "--vision_feature_reuse", "false")
    reuse = build(tiny_model_dir, dataset, tmp_path / "reuse", "--vision_feature_reuse", "true")
    cached = build(tiny_model_dir, dataset, tmp_path / "cached", "--vision_feature_reuse", "false",
                   "--vision_feature_cache", str(tmp_path / "f.safetensors"))  # fmt: skip

    # LoRA B starts at zero, which would make every lora_A gradient zero: give all three the same random adapter.
    generator = torch.Generator().manual_seed(0)
    reference = {n: torch.randn(p.shape, generator=generator) * 0.05 for n, p in lora_parameters(plain.model).items()}
    counters = {}
    for name, trainer in (("plain", plain), ("reuse", reuse), ("cached", cached)):
        with torch.no_grad():
            for n, p in lora_parameters(trainer.model).items():
                p.copy_(reference[n])
        counters[name] = count_encoded_images(trainer.model)

    rows = plain.train_dataset
    # image 0 three times (two questions, one repeated), image 1 once
    examples = [rows[i] for i in (0, 3, 1, 2, 0)]
    results = {}
    for name, trainer in (("plain", plain), ("reuse", reuse), ("cached", cached)):
        trainer.model.train()
        trainer.model.zero_grad()
        batch = trainer.data_collator([dict(e) for e in examples])
        assert ("pixel_values" in batch) == (name != "cached")
        loss = trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in lora_parameters(trainer.model).items()}
        results[name] = (loss.detach(), grads)

    assert counters["plain"]() == 5 and counters["reuse"]() == 2 and counters["cached"]() == 0
    want_loss, want_grads = results["plain"]
    assert all(g.abs().sum() > 0 for g in want_grads.values())  # every LoRA matrix gets a gradient
    for name in ("reuse", "cached"):
        loss, grads = results[name]
        torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-6)
        assert grads.keys() == want_grads.keys()
        for key in want_grads:
            torch.testing.assert_close(grads[key], want_grads[key], rtol=1e-4, atol=1e-6, msg=f"{name}: {key}")


def test_cached_training_run_follows_the_uncached_loss_curve(tiny_model_dir, shared_images_dataset_dir, tmp_path):
    from stk_vqa.scripts.sft import train

    common = [str(SMOKE_RECIPE), "--model_name_or_path", str(tiny_model_dir), "--dataset_name",
              str(shared_images_dataset_dir), "--max_steps", "8", "--save_strategy", "no", "--report_to", "none",
              "--loss_curve", "false", "--disable_tqdm", "true", "--eval_strategy", "steps", "--eval_steps", "8"]  # fmt: skip
    plain = train(common + ["--output_dir", str(tmp_path / "plain"), "--vision_feature_reuse", "false"])
    cached = train(common + ["--output_dir", str(tmp_path / "cached"), "--vision_feature_reuse", "true",
                             "--vision_feature_cache", str(tmp_path / "features.safetensors")])  # fmt: skip

    def losses(trainer, key):
        return [entry[key] for entry in trainer.state.log_history if key in entry]

    assert len(losses(cached, "loss")) == 8
    assert losses(cached, "loss") == pytest.approx(losses(plain, "loss"), rel=1e-4)
    assert losses(cached, "eval_loss") == pytest.approx(losses(plain, "eval_loss"), rel=1e-4)
    assert (tmp_path / "features.safetensors").is_file()


def test_feature_cache_is_built_once_extended_and_checked(tiny_model_dir, shared_images_dataset_dir, tmp_path):
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from stk_vqa.tiny_model import make_tiny_model
    from stk_vqa.training.feature_cache import FeatureCache, encode_images, image_key, prepare_feature_cache
    from stk_vqa.training.vision_features import VisionFeatureError, count_encoded_images

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).requires_grad_(False)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    splits = load_dataset(str(shared_images_dataset_dir))
    encoded = count_encoded_images(model)
    path = tmp_path / "cache" / "features.safetensors"

    cache = prepare_feature_cache(path, model, processor, [splits["train"]], progress=False)
    assert len(cache) == 3 and encoded() == 3 + 1  # 3 distinct images of 9 rows, + the probe image
    image = splits["train"][4]["images"][0]
    got = cache.lookup([image_key(image)])
    torch.testing.assert_close(got, encode_images(model, processor, [image]), rtol=1e-5, atol=1e-6)
    assert got.shape == (1, processor.image_seq_len, model.config.text_config.hidden_size)

    before = encoded()
    cache = prepare_feature_cache(path, model, processor, [splits["train"], splits["validation"]], progress=False)
    assert len(cache) == 4 and encoded() - before == 1 + 1  # only the new validation image, + the probe check
    torch.testing.assert_close(cache.lookup([image_key(image)]), got)  # old rows kept
    assert sorted(p.name for p in path.parent.iterdir()) == ["features.safetensors"]  # no temporary file left

    with pytest.raises(VisionFeatureError, match=r"1 image\(s\) are not in the vision feature cache"):
        cache.lookup([image_key(image), b"\0" * 16])

    other = Path(make_tiny_model(tmp_path / "other", seed=1))  # same shape, other weights
    with pytest.raises(VisionFeatureError, match="computed by another vision tower or connector"):
        prepare_feature_cache(path, AutoModelForImageTextToText.from_pretrained(other).requires_grad_(False),
                              processor, [splits["train"]], progress=False)  # fmt: skip
    small = AutoProcessor.from_pretrained(tiny_model_dir)
    small.image_processor.size = small.image_processor.max_image_size = {"longest_edge": 64}
    small.image_seq_len = 1
    with pytest.raises(VisionFeatureError, match="different image_size"):
        FeatureCache(path).check_matches(model, small)
    (tmp_path / "junk.safetensors").write_bytes(b"not a cache")
    with pytest.raises(VisionFeatureError, match="cannot be read"):
        FeatureCache(tmp_path / "junk.safetensors")


def test_cache_is_refused_when_the_vision_tower_trains(tiny_model_dir, shared_images_dataset_dir, tmp_path):
    from stk_vqa.training.configs import RecipeError, parse_recipe
    from stk_vqa.training.vision_features import VisionFeatureError, check_vision_frozen

    argv = [str(SMOKE_RECIPE), "--model_name_or_path", str(tiny_model_dir), "--dataset_name",
            str(shared_images_dataset_dir), "--output_dir", str(tmp_path / "x"), "--lora_scope", "all"]  # fmt: skip
    with pytest.raises(RecipeError, match=r"field 'vision_feature_cache' needs a frozen vision tower"):
        parse_recipe(argv + ["--vision_feature_cache", str(tmp_path / "f.safetensors")])

    trainer = build(tiny_model_dir, shared_images_dataset_dir, tmp_path / "all", "--lora_scope", "all")
    with pytest.raises(VisionFeatureError, match=r"vision_model\.encoder\.layers\.0\.self_attn\.\w+_proj\.lora_A"):
        check_vision_frozen(trainer.model)


def test_reuse_gives_the_same_gradients_when_the_vision_tower_trains(
    tiny_model_dir, shared_images_dataset_dir, tmp_path
):
    """With LoRA on the vision tower too, reuse encodes each distinct image once and autograd sums the duplicates'
    gradients: the same loss and the same gradient on every LoRA matrix, vision ones included."""
    import torch

    from stk_vqa.training.vision_features import count_encoded_images, trainable_vision_parameters

    plain = build(tiny_model_dir, shared_images_dataset_dir, tmp_path / "p", "--lora_scope", "all",
                  "--vision_feature_reuse", "false")  # fmt: skip
    reuse = build(tiny_model_dir, shared_images_dataset_dir, tmp_path / "r", "--lora_scope", "all",
                  "--vision_feature_reuse", "true")  # fmt: skip
    assert trainable_vision_parameters(reuse.model)
    generator = torch.Generator().manual_seed(0)
    reference = {n: torch.randn(p.shape, generator=generator) * 0.05 for n, p in lora_parameters(plain.model).items()}
    examples = [plain.train_dataset[i] for i in (0, 3, 1, 2, 0)]  # image 0 three times
    results = {}
    for name, trainer in (("plain", plain), ("reuse", reuse)):
        with torch.no_grad():
            for n, p in lora_parameters(trainer.model).items():
                p.copy_(reference[n])
        counter = count_encoded_images(trainer.model)
        trainer.model.train()
        trainer.model.zero_grad()
        batch = trainer.data_collator([dict(e) for e in examples])
        loss = trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in lora_parameters(trainer.model).items()}
        results[name] = (loss.detach(), grads, counter())
    want_loss, want_grads, encoded = results["plain"]
    loss, grads, reuse_encoded = results["reuse"]
    assert (encoded, reuse_encoded) == (5, 2)
    vision = [n for n in want_grads if "vision_model" in n]
    assert vision and all(want_grads[n].abs().sum() > 0 for n in vision)
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-6)
    for n, g in want_grads.items():
        torch.testing.assert_close(grads[n], g, rtol=1e-4, atol=1e-6)
