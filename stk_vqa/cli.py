"""The ``stk-vqa`` command line (Fire).

Each sub-command lives in its own module and is imported only when it is asked for, so that
``stk-vqa generate`` starts without importing torch or transformers.
"""

from __future__ import annotations

import importlib
import os
import sys

# command name -> ("module", "function", one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "generate": ("stk_vqa.generate", "generate", "QA pairs for a split folder -> <split>/generated_qa_pairs.json"),
    "check": ("stk_vqa.generate", "check", "print one view's scene + QA pairs and save it with boxes drawn"),
    "build": ("stk_vqa.dataset_builder", "build_cli", "frames + QA -> Hub-ready DatasetDict (parquet + card)"),
    "preview": ("stk_vqa.preview", "preview", "PNG grid + HTML gallery of sample rows of a built dataset"),
    "render": ("stk_vqa.render.cli", "render", "render fresh frames from the real game (pystk2), course layout"),
    "make-tiny-model": ("stk_vqa.tiny_model", "make_tiny_model", "save an offline SmolVLM-architecture stand-in"),
    "train": ("stk_vqa.training", "train_cli", "train a recipe (alias of scripts/sft.py RECIPE)"),
    "evaluate": ("stk_vqa.evaluation.cli", "evaluate", "benchmark a base model and adapters, write reports"),
    "test": ("stk_vqa.evaluation.cli", "test", "evaluate one checkpoint (the original project's alias)"),
    "ask": ("stk_vqa.evaluation.cli", "ask", "answer one question about one image"),
    "quickstart": ("stk_vqa.quickstart", "quickstart", "build -> train -> evaluate on the bundled sample"),
    "app": ("stk_vqa.app.ui", "app", "browse frames, questions and reports, ask the models (Gradio, .[app] extra)"),
}


USER_ERRORS = (ValueError, OSError)
"""Bad input, bad flags, existing or missing files, a failed push: reported as one ``error:`` line
(``STK_VQA_DEBUG=1`` shows the traceback). The package's input errors (``InfoFileError``, ``RecipeError``, ...)
are ``ValueError``s; ``HubPushError`` is an ``OSError``."""


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: stk-vqa COMMAND [ARGS...]   (stk-vqa COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def resolve(name: str):
    """Import and return the function behind command ``name`` (``make_tiny_model`` == ``make-tiny-model``)."""
    key = name.replace("_", "-")
    if key not in COMMANDS:
        raise SystemExit(f"stk-vqa: unknown command {name!r}\n\n{_usage()}")
    module_name, function_name, _ = COMMANDS[key]
    return getattr(importlib.import_module(module_name), function_name)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return
    import fire

    rest = argv[1:]
    if "--help" in rest or "-h" in rest:
        rest = ["--", "--help"]  # Fire's own help, also for commands that take **overrides
    try:
        fire.Fire(resolve(argv[0]), command=rest, name=f"stk-vqa {argv[0]}")
    except USER_ERRORS as err:
        if os.environ.get("STK_VQA_DEBUG"):
            raise
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
