#!/usr/bin/env python
"""Fine-tune SmolVLM on an stk-vqa DatasetDict with TRL's SFTTrainer (LoRA / QLoRA).

    accelerate launch scripts/sft.py recipes/smolvlm_lora.yaml
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml scripts/sft.py recipes/smolvlm_lora.yaml
    python scripts/sft.py recipes/quickstart_cpu.yaml --max_steps 5      # any recipe field can be overridden
    stk-vqa train recipes/quickstart_cpu.yaml                             # the same script

A recipe holds the fields of three dataclasses, as in TRL's ``trl/scripts/sft.py``: ``StkScriptArguments``
(dataset, image size, LoRA scope, vision-feature reuse), ``trl.SFTConfig`` and ``trl.ModelConfig``. Loss is on the
assistant's answer tokens only (``assistant_only_loss``: TRL's vision-language collator masks the rest).
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

from stk_vqa.training.configs import RecipeError, StkScriptArguments, effective_recipe, make_parser, parse_recipe
from stk_vqa.training.data import load_training_data
from stk_vqa.training.model_utils import load_model_and_processor, lora_config
from stk_vqa.training.trainer import StkSFTTrainer, record_rows, setup_input_path

TAGS = ["stk-vqa", "supertuxkart", "vqa"]


def build_trainer(script_args: StkScriptArguments, training_args, model_args) -> StkSFTTrainer:
    """Data -> model + processor -> LoRA -> a ready trainer (nothing trained yet)."""
    from transformers import set_seed

    from stk_vqa.training.artifacts import LossCurveCallback

    set_seed(training_args.seed)

    # Data: the DatasetDict's train split (and its validation split when the recipe evaluates)
    with_eval = training_args.eval_strategy != "no"
    train_dataset, eval_dataset = load_training_data(script_args, with_eval=with_eval)

    # Model and processor: dtype, attention and 4-bit quantization from ModelConfig, one square image per row
    model, processor = load_model_and_processor(model_args, script_args, training_args)

    # Trainer: TRL's SFTTrainer wraps the model in LoRA (text model only with lora_scope: text)
    trainer = StkSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=lora_config(model_args, script_args.lora_scope),
        callbacks=[LossCurveCallback()] if script_args.loss_curve else [],
        recipe=effective_recipe(script_args, training_args, model_args),
    )
    # Input path (the recipe's fields): rows tokenised once, each image encoded once per batch or read from the
    # feature cache, an image's questions batched together
    setup_input_path(trainer, script_args, [train_dataset, eval_dataset])
    if script_args.record_rows:
        record_rows(trainer)
    return trainer


def main(script_args: StkScriptArguments, training_args, model_args) -> StkSFTTrainer:
    """Train, save the adapter, evaluate, write the model card, push when asked; return the trainer."""
    import transformers

    from stk_vqa.fileio import on_interrupt
    from stk_vqa.training.artifacts import prepare_output_dir, saved_note, write_recipe

    transformers.logging.set_verbosity_warning()
    output_dir = Path(training_args.output_dir)
    trainer = build_trainer(script_args, training_args, model_args)  # data and model first: a bad one changes nothing
    # every process has checked output_dir (parse_recipe) before the first one writes there: otherwise a slower
    # process can find this run's own files and refuse them as "an earlier run"
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        # an earlier run (checked by parse_recipe) is removed only with overwrite_output_dir, and only now
        overwrite = script_args.overwrite_output_dir and not training_args.resume_from_checkpoint
        prepare_output_dir(str(output_dir), overwrite, keep=[script_args.vision_feature_cache])
        write_recipe(output_dir / "recipe.yaml", trainer.stk_recipe)
    trainer.accelerator.wait_for_everyone()

    # Train (resuming from the newest complete checkpoint when asked); Ctrl-C says what was saved
    with on_interrupt(lambda: saved_note(str(output_dir))):
        trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    # Save the adapter (adapter_config.json + adapter_model.safetensors + processor files) and evaluate
    trainer.save_model(str(output_dir))
    if trainer.eval_dataset is not None:
        trainer.save_metrics("eval", trainer.evaluate())

    # Model card, and the Hub
    trainer.create_model_card(dataset_name=script_args.dataset_name, tags=TAGS)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name, tags=TAGS)
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.num_processes > 1:
        # free the DDP wrapper now, while the process group exists: its gradient reducer holds the group, and freed
        # after trainer.end() destroyed it, gloo's destructor waits forever for its threads (a hang at exit, seen in
        # the 2-process CPU test: ~ProcessGroupGloo -> std::thread::join under Reducer dealloc)
        trainer.accelerator.free_memory()
        trainer.model_wrapped = trainer.model
        gc.collect()
    if hasattr(trainer, "end"):
        trainer.end()  # close trackers / process group (transformers >= 5.18)
    return trainer


def train(argv: list[str] | None = None) -> StkSFTTrainer:
    """Parse ``[RECIPE.yaml] [--field value ...]`` and run :func:`main` (what ``stk-vqa train`` and the quickstart call)."""
    return main(*parse_recipe(argv))


def cli(argv: list[str] | None = None) -> None:
    """Command-line entry: recipe problems end with one ``error:`` line (exit 2), not a stack trace; Ctrl-C ends with
    one line saying what was saved (exit 130)."""
    from stk_vqa.cli import one_line
    from stk_vqa.fileio import interrupt_message

    try:
        train(sys.argv[1:] if argv is None else argv)
    except RecipeError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt as interrupt:
        print(f"interrupted (Ctrl-C): {interrupt_message(interrupt)}", file=sys.stderr)
        raise SystemExit(130) from None
    except (ValueError, OSError) as error:  # bad data, model or files: one line, as every stk-vqa command
        if os.environ.get("STK_VQA_DEBUG"):
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(1) from None


__all__ = ["build_trainer", "main", "train", "cli", "make_parser"]

if __name__ == "__main__":
    cli()
