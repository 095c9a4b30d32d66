"""Training (scripts/sft.py, stk_vqa.training) on the tiny offline model, CPU only.

The 2-process and kill/resume tests start real processes (`accelerate launch`, `python scripts/sft.py`).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOKE_RECIPE = REPO_ROOT / "recipes" / "smoke_cpu.yaml"
BLIND_LOSS = math.log(4) / 3  # best mean loss over (answer, <end_of_utterance>, \n) without looking at the image


def smoke_argv(model_dir, dataset_dir, output_dir, *extra: str) -> list[str]:
    return [
        str(SMOKE_RECIPE),
        "--model_name_or_path", str(model_dir),
        "--dataset_name", str(dataset_dir),
        "--output_dir", str(output_dir),
        "--disable_tqdm", "true",
        *extra,
    ]  # fmt: skip


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE")
    # keep any PYTHONPATH the caller has (e.g. packages installed with --target), the repo first
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.update(TOKENIZERS_PARALLELISM="false", PYTHONPATH=pythonpath)
    return env


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def unique_rows_dataset_dir(color_chat_dataset_dir, tmp_path_factory) -> Path:
    """The colour set with a distinct question per row (so a row can be told apart from its text)."""
    from datasets import load_dataset

    out = tmp_path_factory.mktemp("unique_rows")
    dataset = load_dataset(str(color_chat_dataset_dir))

    def number(row, index):
        question = f"What color is image {index}?"
        row["messages"][0]["content"][1]["text"] = question
        return {"messages": row["messages"], "question": question}

    (out / "data").mkdir()
    for split in dataset:
        rows = dataset[split].map(number, with_indices=True)
        rows.to_parquet(str(out / "data" / f"{split}-00000-of-00001.parquet"))
    return out


@pytest.fixture(scope="module")
def trained(tiny_model_dir, color_chat_dataset_dir, tmp_path_factory):
    """The smoke recipe (30 steps) on the 8-row colour set, evaluated on its 4 validation rows."""
    from stk_vqa.scripts.sft import train

    output_dir = tmp_path_factory.mktemp("smoke") / "run"
    argv = smoke_argv(
        tiny_model_dir, color_chat_dataset_dir, output_dir, "--eval_strategy", "steps", "--eval_steps", "15"
    )
    return train(argv)


# ---------------------------------------------------------------------------------------------------------------------
# Labels, LoRA placement, image size (a trainer is built, nothing trained)


def _built_trainer(tiny_model_dir, dataset_dir, tmp_path, *extra):
    from stk_vqa.scripts.sft import build_trainer
    from stk_vqa.training.configs import parse_recipe

    return build_trainer(*parse_recipe(smoke_argv(tiny_model_dir, dataset_dir, tmp_path / "out", *extra)))


def _image(rgb=(200, 30, 30)):
    from PIL import Image

    return Image.new("RGB", (150, 100), rgb)


def _turn(role, text, image=False):
    content = ([{"type": "image", "text": None}] if image else []) + [{"type": "text", "text": text}]
    return {"role": role, "content": content}


def test_labels_cover_only_the_answers_and_their_end_of_utterance(tiny_model_dir, color_chat_dataset_dir, tmp_path):
    trainer = _built_trainer(tiny_model_dir, color_chat_dataset_dir, tmp_path)
    tok = trainer.processing_class.tokenizer
    examples = [
        {
            "images": [_image()],
            "messages": [_turn("user", "What color is the image?", True), _turn("assistant", "red")],
        },
        {  # a grouped row: two QA turns about one image
            "images": [_image((30, 30, 200))],
            "messages": [
                _turn("user", "Is tux to the left or right of the ego car?", True),
                _turn("assistant", "front and left"),
                _turn("user", "How many karts are there in the scenario?"),
                _turn("assistant", "3"),
            ],
        },
    ]
    batch = trainer.data_collator(examples)
    trained_text = []
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        kept = labels != -100
        assert (labels[kept] == ids[kept]).all()
        # every answer token run, decoded separately
        runs, current = [], []
        for token, keep in zip(ids.tolist(), kept.tolist()):
            if keep:
                current.append(token)
            elif current:
                runs.append(tok.decode(current))
                current = []
        if current:
            runs.append(tok.decode(current))
        trained_text.append(runs)
        image_positions = ids == trainer.model.config.image_token_id
        assert image_positions.sum() == 4 and not kept[image_positions].any()
    assert trained_text == [
        [" red<end_of_utterance>\n"],
        [" front and left<end_of_utterance>\n", " 3<end_of_utterance>\n"],
    ]
    # Nothing of the prompt: no "User", "Assistant:" or question token is trained.
    assert all("What" not in run and "Assistant" not in run for runs in trained_text for run in runs)


def test_lora_wraps_only_the_text_model_and_vision_stays_frozen(tiny_model_dir, color_chat_dataset_dir, tmp_path):
    trainer = _built_trainer(tiny_model_dir, color_chat_dataset_dir, tmp_path)
    trainable = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    lora_modules = {name.rsplit(".lora_", 1)[0] for name in trainable}
    assert trainable and all("lora_" in name and ".text_model." in name for name in trainable)
    projections = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert {name.rsplit(".", 1)[1] for name in lora_modules} == projections
    assert len(lora_modules) == 2 * len(projections)  # 2 layers

    everywhere = _built_trainer(
        tiny_model_dir, color_chat_dataset_dir, tmp_path, "--lora_scope", "all", "--vision_feature_reuse", "false"
    )
    names = [name for name, p in everywhere.model.named_parameters() if p.requires_grad]
    assert any(".vision_model." in name for name in names)


def test_image_size_field_sets_processor_and_image_tokens(tiny_model_dir, color_chat_dataset_dir, tmp_path):
    trainer = _built_trainer(tiny_model_dir, color_chat_dataset_dir, tmp_path, "--image_size", "64")
    processor = trainer.processing_class
    assert processor.image_seq_len == 1 and processor.image_processor.do_image_splitting is False
    batch = trainer.data_collator(
        [{"images": [_image()], "messages": [_turn("user", "Q?", True), _turn("assistant", "red")]}]
    )
    assert batch["pixel_values"].shape[-2:] == (64, 64)
    assert int((batch["input_ids"] == trainer.model.config.image_token_id).sum()) == 1


# ---------------------------------------------------------------------------------------------------------------------
# A real run


def test_smoke_recipe_memorises_the_small_set(trained):
    history = trained.state.log_history
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert trained.state.global_step == 30 and len(losses) == 30
    assert losses[0] > 5.0  # ~ln(vocab) before training
    # below what any image-blind model can reach: it learnt which colour each image is
    assert sum(losses[-5:]) / 5 < BLIND_LOSS / 2


def test_run_leaves_adapter_curve_logs_card_and_recipe(trained):
    from PIL import Image
    from safetensors import safe_open

    out = Path(trained.args.output_dir)
    config = json.loads((out / "adapter_config.json").read_text())
    assert "text_model" in config["target_modules"]
    with safe_open(out / "adapter_model.safetensors", "pt") as weights:
        keys = list(weights.keys())
    assert keys and all("lora_" in key and "text_model" in key for key in keys)
    assert not (out / "model.safetensors").exists()  # an adapter, not a full copy of the model

    with Image.open(out / "loss_curve.png") as curve:
        assert curve.format == "PNG" and curve.size == (600, 400)
    assert list(out.glob("runs/*/events.out.tfevents.*")), "no tensorboard event file"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-30"]  # save_total_limit 2

    eval_results = json.loads((out / "eval_results.json").read_text())
    card = (out / "README.md").read_text()
    assert f"Base model: `{trained.stk_recipe['model_name_or_path']}`" in card
    assert f"Dataset: `{trained.stk_recipe['dataset_name']}`" in card
    assert "learning_rate: 0.005" in card and "lora_scope: text" not in card  # recipe shows non-defaults only
    assert f"| eval_loss | {eval_results['eval_loss']:.4g} |" in card
    assert "![loss curve](loss_curve.png)" in card
    import yaml

    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["max_steps"] == 30 and recipe["use_peft"] is True and recipe["eval_strategy"] == "steps"


def test_saved_adapter_reloads_to_identical_logits_and_answers(trained, tiny_model_dir, color_chat_dataset_dir):
    import torch
    from datasets import load_dataset
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = trained.args.output_dir
    rows = load_dataset(str(color_chat_dataset_dir), split="train")
    batch = trained.data_collator([{"images": r["images"], "messages": r["messages"]} for r in rows])
    batch.pop("labels")
    in_memory = trained.model.eval()
    reloaded = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_model_dir), out).eval()
    with torch.no_grad():
        expected, actual = in_memory(**batch).logits, reloaded(**batch).logits
    assert torch.equal(expected, actual)

    # and the reloaded model answers every training image right (greedy), through the saved processor
    processor = AutoProcessor.from_pretrained(out)
    for row in rows:
        prompt = processor.apply_chat_template(row["messages"][:1], add_generation_prompt=True)
        inputs = processor(images=row["images"], text=[prompt], return_tensors="pt")
        with torch.no_grad():
            generated = reloaded.generate(**inputs, max_new_tokens=4, do_sample=False)
        answer = processor.decode(generated[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        assert answer.strip() == row["answer"]


def test_two_processes_train_on_disjoint_shards_and_save_one_adapter(tiny_model_dir, unique_rows_dataset_dir, tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO_ROOT / "accelerate_configs" / "cpu_ddp.yaml"), "--num_processes", "2",
        "--main_process_port", str(free_port()),  # other runs on this machine may hold the default 29500
        str(REPO_ROOT / "scripts" / "sft.py"),
        *smoke_argv(tiny_model_dir, unique_rows_dataset_dir, out,
                    "--max_steps", "2", "--per_device_train_batch_size", "2", "--record_rows", "true"),
    ]  # fmt: skip
    result = subprocess.run(command, env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = {}
    for rank in (0, 1):
        lines = (out / "rows" / f"rank-{rank}.jsonl").read_text().splitlines()
        seen[rank] = [json.loads(line)["conversation"] for line in lines]
        assert len(seen[rank]) == 4  # 2 steps x 2 rows
    assert not set(seen[0]) & set(seen[1])
    assert len(set(seen[0]) | set(seen[1])) == 8  # together: the whole train split, once
    assert len(list(out.rglob("adapter_model.safetensors"))) == 1 + 1  # the final adapter + checkpoint-2's
    assert (out / "adapter_model.safetensors").exists()
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["train_batch_size"] == 2


def test_resume_after_kill_reaches_the_same_adapter(tiny_model_dir, color_chat_dataset_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    from stk_vqa.scripts.sft import train

    steps = ["--max_steps", "80", "--save_steps", "5", "--save_total_limit", "3"]
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "scripts" / "sft.py"), *smoke_argv(tiny_model_dir, color_chat_dataset_dir, killed, *steps)],
        env=subprocess_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (killed / "checkpoint-5" / "trainer_state.json").exists():
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 4 minutes"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "checkpoint-80").exists() and not (killed / "adapter_model.safetensors").exists()

    resumed = train(
        smoke_argv(tiny_model_dir, color_chat_dataset_dir, killed, *steps, "--resume_from_checkpoint", "last")
    )
    assert resumed.state.global_step == 80
    logged_steps = [entry["step"] for entry in resumed.state.log_history if "loss" in entry]
    assert logged_steps == list(range(1, 81))  # history carried over from the checkpoint, no step twice

    reference = train(smoke_argv(tiny_model_dir, color_chat_dataset_dir, tmp_path / "reference", *steps))
    got = load_file(killed / "adapter_model.safetensors")
    want = load_file(Path(reference.args.output_dir) / "adapter_model.safetensors")
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5)


def test_last_complete_checkpoint_skips_a_partial_one(tmp_path):
    from stk_vqa.training.artifacts import last_complete_checkpoint

    for step, complete in ((5, True), (10, True), (15, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-99.tmp").mkdir()
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert last_complete_checkpoint(tmp_path / "missing") is None


def test_cli_train_alias_passes_overrides(tiny_model_dir, color_chat_dataset_dir, tmp_path):
    from stk_vqa.cli import main

    out = tmp_path / "cli"
    main(["train", str(SMOKE_RECIPE), "--model_name_or_path", str(tiny_model_dir), "--dataset_name",
          str(color_chat_dataset_dir), "--output_dir", str(out), "--max_steps", "2", "--save_strategy", "no"])  # fmt: skip
    assert (out / "adapter_model.safetensors").exists()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8
    assert not list(out.glob("checkpoint-*"))


# ---------------------------------------------------------------------------------------------------------------------
# Recipes and bad input


@pytest.mark.parametrize("recipe", sorted((REPO_ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_parse(recipe, tmp_path, monkeypatch):
    import torch

    from stk_vqa.training.configs import parse_recipe

    # GPU recipes say bf16: true, which SFTConfig refuses on a machine without CUDA; everything else parses as written
    gpu_recipe = "\nbf16: true" in recipe.read_text()
    on_cpu = [] if torch.cuda.is_available() or not gpu_recipe else ["--bf16", "false"]
    monkeypatch.chdir(tmp_path)  # the recipes' relative output_dir: not a run a user left in the checkout
    script_args, training_args, model_args = parse_recipe([str(recipe), *on_cpu])
    assert training_args.bf16 == (gpu_recipe and not on_cpu)
    from_scratch = recipe.name == "learn_to_see_cpu.yaml"  # the one run that trains every weight, no LoRA
    assert script_args.dataset_name and model_args.model_name_or_path and model_args.use_peft != from_scratch
    assert training_args.assistant_only_loss and script_args.lora_scope == "text"
    assert "tensorboard" in training_args.report_to


def test_command_line_overrides_recipe_and_config_flag_is_equivalent():
    from stk_vqa.training.configs import parse_recipe

    positional = parse_recipe([str(SMOKE_RECIPE), "--learning_rate", "0.1", "--lora_r", "4"])
    flag = parse_recipe(["--config", str(SMOKE_RECIPE), "--learning_rate", "0.1", "--lora_r", "4"])
    for parsed in (positional, flag):
        script_args, training_args, model_args = parsed
        assert training_args.learning_rate == 0.1 and model_args.lora_r == 4
        assert training_args.max_steps == 30 and not training_args.bf16 and model_args.dtype == "float32"


@pytest.mark.parametrize(
    "line, message",
    [
        ("lerning_rate: 1.0e-4", r"unknown field 'lerning_rate' \(did you mean 'learning_rate'\?\)"),
        ("max_steps: many", r"field 'max_steps': expected int, got 'many'"),
        ("max_steps: 2.5", r"field 'max_steps': expected int, got 2.5"),
        ("bf16: maybe", r"field 'bf16': expected bool, got 'maybe'"),
        ("lora_scope: vision", r"field 'lora_scope': 'vision' is not one of \['all', 'text'\]"),
        ("learning_rate: [1, 2]", r"field 'learning_rate': expected one value"),
    ],
)
def test_bad_recipe_field_is_named(tmp_path, line, message):
    from stk_vqa.training.configs import RecipeError, parse_recipe

    recipe = tmp_path / "bad.yaml"
    recipe.write_text(SMOKE_RECIPE.read_text() + "\n" + line + "\n")
    with pytest.raises(RecipeError, match=rf"recipe {recipe}: {message}"):
        parse_recipe([str(recipe)])


def test_dataset_without_images_column_is_refused(tiny_model_dir, color_chat_dataset_dir, tmp_path):
    from datasets import load_dataset

    from stk_vqa.scripts.sft import build_trainer
    from stk_vqa.training.configs import RecipeError, parse_recipe

    text_only = tmp_path / "text_only"
    (text_only / "data").mkdir(parents=True)
    for split, rows in load_dataset(str(color_chat_dataset_dir)).items():
        rows.remove_columns("images").to_parquet(str(text_only / "data" / f"{split}-00000-of-00001.parquet"))
    args = parse_recipe(smoke_argv(tiny_model_dir, text_only, tmp_path / "out"))
    with pytest.raises(RecipeError, match=r"split 'train': missing column\(s\) \['images'\]"):
        build_trainer(*args)
    args = parse_recipe(smoke_argv(tiny_model_dir, color_chat_dataset_dir, tmp_path / "out", "--eval_strategy", "epoch",
                                   "--dataset_test_split", "test"))  # fmt: skip
    with pytest.raises(RecipeError, match=r"no split 'test' \(it has \['train', 'validation'\]\)"):
        build_trainer(*args)


def test_cli_errors_are_one_line_not_a_traceback(tiny_model_dir, color_chat_dataset_dir, tmp_path, capsys):
    import torch

    from stk_vqa.scripts.sft import cli as main

    if torch.cuda.is_available():
        pytest.skip("checks the message shown where CUDA is missing")
    with pytest.raises(SystemExit) as exit_info:
        main(smoke_argv(tiny_model_dir, color_chat_dataset_dir, tmp_path / "q", "--load_in_4bit", "true"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: load_in_4bit (QLoRA) needs a CUDA GPU") and "Traceback" not in "".join(err)

    with pytest.raises(SystemExit):
        main(smoke_argv(tmp_path / "no-model", color_chat_dataset_dir, tmp_path / "m"))
    assert f"stk-vqa make-tiny-model {tmp_path / 'no-model'}" in capsys.readouterr().err
