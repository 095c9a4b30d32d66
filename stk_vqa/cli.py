"""The ``stk-vqa`` command line.

Every command is a config dataclass parsed by ``transformers.HfArgumentParser`` (``train``: TRL's ``TrlParser``
over the recipe's dataclasses, in ``scripts/sft.py``), from flags or a YAML file of the same fields::

    stk-vqa build --data_dir data --out_dir outputs/stk-vqa --balance
    stk-vqa build my_build.yaml --seed 1          # YAML values, then flags on top

and the function behind it takes that dataclass, so ``scripts/*.py``, the library and the command line share one
config system. Modules are imported only when their command runs: ``stk-vqa generate`` loads no torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Command:
    config: str
    """``module:DataclassName`` of the command's options."""
    function: str
    """``module:function``; called with the parsed dataclass (or its fields as keywords when ``keywords``)."""
    help: str
    positional: tuple[str, ...] = ()
    """Fields that may be given as leading bare values (``stk-vqa check FRAME_info.json``)."""
    keywords: bool = False


COMMANDS: dict[str, Command] = {
    "generate": Command(
        "stk_vqa.data.configs:GenerateConfig",
        "stk_vqa.data.generate:generate",
        "QA pairs for a split folder -> <split>/generated_qa_pairs.json",
    ),
    "check": Command(
        "stk_vqa.data.configs:CheckConfig",
        "stk_vqa.data.generate:check",
        "print one view's scene + QA pairs and save it with boxes drawn",
        ("info_file",),
    ),
    "build": Command(
        "stk_vqa.data.configs:BuildConfig",
        "stk_vqa.data.builder:build",
        "frames + QA -> Hub-ready DatasetDict (parquet + card)",
    ),
    "preview": Command(
        "stk_vqa.data.configs:PreviewConfig",
        "stk_vqa.data.preview:preview",
        "PNG grid + HTML gallery of sample rows of a built dataset",
        ("dataset",),
    ),
    "render": Command(
        "stk_vqa.render.config:RenderConfig",
        "stk_vqa.render.cli:render_command",
        "render fresh frames from the real game (engine instance-map boxes), course layout",
    ),
    "make-tiny-model": Command(
        "stk_vqa.tiny_model:TinyModelConfig",
        "stk_vqa.tiny_model:make_tiny_model",
        "save an offline SmolVLM-architecture stand-in",
        ("out_dir",),
        keywords=True,
    ),
    "train": Command("", "stk_vqa.scripts.sft:cli", "train a recipe (the same as scripts/sft.py RECIPE)"),
    "evaluate": Command(
        "stk_vqa.evaluation.configs:EvalConfig",
        "stk_vqa.evaluation.cli:run_evaluation",
        "benchmark a base model and adapters, write reports",
        ("data",),
    ),
    "test": Command(
        "stk_vqa.evaluation.configs:TestConfig",
        "stk_vqa.evaluation.cli:test",
        "evaluate one checkpoint (the original project's alias)",
        ("checkpoint",),
    ),
    "ask": Command(
        "stk_vqa.evaluation.configs:AskConfig",
        "stk_vqa.evaluation.cli:ask",
        "answer one question about one image",
        ("image", "question"),
    ),
    "quickstart": Command(
        "stk_vqa.quickstart:QuickstartConfig",
        "stk_vqa.quickstart:quickstart",
        "build -> train -> evaluate on the bundled sample",
    ),
    "app": Command(
        "stk_vqa.app.logic:AppOptions",
        "stk_vqa.app.ui:app",
        "browse frames, questions and reports, ask the models (Gradio, .[app] extra)",
    ),
}

USER_ERRORS = (ValueError, OSError)
"""Bad input, bad flags, existing or missing files, a failed push: reported as one ``error:`` line
(``STK_VQA_DEBUG=1`` shows the traceback). The package's input errors (``InfoFileError``, ``RecipeError``, ...)
are ``ValueError``s; ``HubPushError`` is an ``OSError``."""


def one_line(error: BaseException) -> str:
    """An error's message on one line (YAML, argparse and PIL messages span several)."""
    return " ".join(part.strip() for part in str(error).splitlines() if part.strip())


def _load(reference: str):
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: stk-vqa COMMAND [CONFIG.yaml] [--field value ...]   (stk-vqa COMMAND --help for its fields)", "",
             "commands:"]  # fmt: skip
    lines += [f"  {name.ljust(width)}  {command.help}" for name, command in COMMANDS.items()]
    return "\n".join(lines)


def parse_config(config_class, argv: list[str], prog: str, positional: tuple[str, ...] = ()):
    """Parse ``[CONFIG.yaml] [VALUE ...] [--field value ...]`` into one ``config_class``.

    Leading bare values fill ``positional`` fields in order; a YAML file's fields are defaults that flags override.
    Every problem (unknown field, wrong type, bad value) raises ``ValueError`` naming it.
    """
    from transformers import HfArgumentParser

    class CommandParser(HfArgumentParser):
        def error(self, message):  # argparse would print usage and exit 2
            raise ValueError(message)

    parser = CommandParser(config_class, prog=prog)
    argv = list(argv)
    names = {f.name for f in dataclasses.fields(config_class) if f.init}
    if argv and argv[0].endswith((".yaml", ".yml")) and "--help" not in argv:
        parser.set_defaults(**_read_yaml_config(Path(argv.pop(0)), names, config_class))
    bare = []
    while argv and not argv[0].startswith("-") and len(bare) < len(positional):
        bare.append(argv.pop(0))
    argv = [item for name, value in zip(positional, bare) for item in (f"--{name}", value)] + argv
    try:
        config, rest = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except TypeError as error:  # a dataclass check on a value argparse could not type
        raise ValueError(str(error)) from None
    if rest:
        unknown = [arg.lstrip("-").split("=")[0] for arg in rest if arg.startswith("-")] or rest
        hints = [difflib.get_close_matches(u, sorted(names), n=1) for u in unknown]
        hint = "".join(f" (did you mean --{h[0]}?)" for h in hints if h)
        raise ValueError(f"unknown option(s) {unknown}{hint}; `{prog} --help` lists the fields")
    return config


def _read_yaml_config(path: Path, names: set[str], config_class=None) -> dict:
    import yaml

    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from None
    except RecursionError:
        raise ValueError(f"{path} is not valid YAML: nested too deeply") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path} must be a YAML mapping of field: value")
    unknown = sorted(set(map(str, values)) - names)
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {unknown}; fields: {sorted(names)}")
    if config_class is not None:
        _check_yaml_types(config_class, values, path)
    return values


def _check_yaml_types(config_class, values: dict, path: Path) -> None:
    """YAML turns ``00001`` into 1 and ``yes`` into True: refuse a value whose type is not its field's (flags are
    typed by argparse; YAML values are not), naming the field."""
    import typing

    hints = typing.get_type_hints(config_class)
    for name, value in values.items():
        expected = hints.get(name)
        allowed = [a for a in typing.get_args(expected)] or [expected]
        if value is None:
            if type(None) not in allowed:
                raise ValueError(f"{path}: field {name!r} may not be null")
            continue
        base = [typing.get_origin(a) or a for a in allowed if a is not type(None)]
        ok = any(
            (t is str and isinstance(value, str))
            or (t is bool and isinstance(value, bool))
            or (t is int and isinstance(value, int) and not isinstance(value, bool))
            or (t is float and isinstance(value, (int, float)) and not isinstance(value, bool))
            or (t is list and isinstance(value, (list, str)) and all(isinstance(v, str) for v in (value if isinstance(value, list) else [value])))
            for t in base
        )  # fmt: skip
        if not ok:
            wanted = " or ".join(getattr(t, "__name__", str(t)) for t in base)
            hint = " (quote it in the YAML file)" if str in base else ""
            raise ValueError(f"{path}: field {name!r}: expected {wanted}, got {value!r}{hint}")


def run(name: str, argv: list[str]):
    """Parse ``argv`` for command ``name`` and run it; returns what the command returns."""
    key = name.replace("_", "-")
    if key not in COMMANDS:
        close = difflib.get_close_matches(key, list(COMMANDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SystemExit(f"stk-vqa: unknown command {name!r}{hint}\n\n{_usage()}")
    command = COMMANDS[key]
    function = _load(command.function)
    if not command.config:  # train: the script parses its recipe itself
        return function(argv)
    config = parse_config(_load(command.config), argv, f"stk-vqa {key}", command.positional)
    return function(**dataclasses.asdict(config)) if command.keywords else function(config)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return
    try:
        run(argv[0], argv[1:])
    except USER_ERRORS as err:
        if os.environ.get("STK_VQA_DEBUG"):
            raise
        raise SystemExit(f"error: {one_line(err)}") from None
    except KeyboardInterrupt as interrupt:
        from stk_vqa.fileio import interrupt_message

        print(f"interrupted (Ctrl-C): {interrupt_message(interrupt)}", file=sys.stderr)
        raise SystemExit(130) from None
    except RecursionError:  # a pathological input that no reader caught: still one line
        raise SystemExit("error: input nested too deeply") from None


if __name__ == "__main__":
    main()
