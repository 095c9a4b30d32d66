"""Load a base model and any number of LoRA adapters (local folders or Hub ids) for side-by-side evaluation.

The base model is loaded once; every adapter is attached to it under its own name with PEFT
(``PeftModel.from_pretrained`` then ``load_adapter``), and each compared model is selected by switching the
active adapter (the bare base model runs inside ``disable_adapter()``). An adapter that saved its own processor
(``stk-vqa train`` saves the image size it trained with) is evaluated with that processor.

Errors are plain sentences naming the path or id: a missing adapter folder, a folder that is a full model or a
training run rather than an adapter, an adapter recorded for another base model, weights that do not fit the
base, a Hub id that cannot be fetched (offline).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .configs import DEFAULT_BASE_MODEL  # noqa: F401  (re-exported)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
ADAPTER_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.jinja", "*.model", "*.txt"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelSourceError(ValueError):
    """A model or adapter that cannot be used; the message names it and says why."""


@dataclass
class Candidate:
    """One of the models compared: the bare base model or the base model with one adapter."""

    name: str
    kind: str
    """``base`` or ``adapter``."""
    source: str
    """The path or Hub id given by the user."""
    adapter_name: str | None = None
    processor: Any = None
    touches_vision: bool = False
    """The adapter changes the vision tower or connector, so its image features are its own."""
    adapter_config: dict = field(default_factory=dict)


@dataclass
class LoadedModels:
    model: Any
    """The base model, or a ``PeftModel`` holding every adapter."""
    base_source: str
    candidates: list[Candidate]
    device: Any
    dtype: Any

    @contextlib.contextmanager
    def activate(self, candidate: Candidate):
        """Run the block with ``candidate``'s weights (its adapter active, or every adapter disabled)."""
        if candidate.adapter_name is None:
            if hasattr(self.model, "disable_adapter"):
                with self.model.disable_adapter():
                    yield self.model
            else:
                yield self.model
        else:
            self.model.set_adapter(candidate.adapter_name)
            yield self.model


def looks_like_hub_id(ref: str) -> bool:
    """``org/name`` (one slash, no leading ``.``, ``/`` or ``~``); anything else can only be a local path."""
    return bool(_HUB_ID.match(ref)) and not ref.startswith((".", "~"))


def _hub_failure(ref: str, what: str, err: Exception) -> ModelSourceError:
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    hint = " HF_HUB_OFFLINE is set: only models already in the Hugging Face cache load." if offline else ""
    return ModelSourceError(
        f"{what} {ref!r}: no such local folder, and it could not be fetched from the Hugging Face Hub "
        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}).{hint}"
    )


def resolve_adapter(ref: str) -> Path:
    """A local folder holding ``adapter_config.json`` for an adapter path or Hub id (downloaded if needed)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if (path / ADAPTER_CONFIG).is_file():
            return path
        checkpoints = sorted(
            (p.name for p in path.glob("checkpoint-*") if (p / ADAPTER_CONFIG).is_file()),
            key=lambda n: int(n.split("-")[-1]) if n.split("-")[-1].isdigit() else -1,
        )
        if checkpoints:
            raise ModelSourceError(
                f"adapter folder {path} has no {ADAPTER_CONFIG}, but holds checkpoints {', '.join(checkpoints)}: "
                f"pass one of them, e.g. {path / checkpoints[-1]}"
            )
        if (path / "config.json").is_file():
            raise ModelSourceError(
                f"{path} is a full model (config.json, no {ADAPTER_CONFIG}), not an adapter: pass it as --model"
            )
        raise ModelSourceError(f"adapter folder {path} has no {ADAPTER_CONFIG}")
    if path.exists():
        raise ModelSourceError(f"adapter {ref!r} is a file, not an adapter folder")
    if not looks_like_hub_id(ref):
        raise ModelSourceError(f"adapter folder {ref!r} does not exist")
    from huggingface_hub import snapshot_download

    try:
        local = Path(snapshot_download(ref, allow_patterns=ADAPTER_ALLOW_PATTERNS))
    except Exception as err:  # offline, not found, gated: huggingface_hub raises several types
        raise _hub_failure(ref, "adapter", err) from None
    if not (local / ADAPTER_CONFIG).is_file():
        raise ModelSourceError(f"Hub repository {ref!r} has no {ADAPTER_CONFIG}: it is not a PEFT adapter")
    return local


def read_adapter_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise ModelSourceError(f"{folder / ADAPTER_CONFIG}: not a readable JSON file ({err})") from None
    if not isinstance(config, dict) or "peft_type" not in config:
        raise ModelSourceError(f"{folder / ADAPTER_CONFIG}: field 'peft_type' missing; not a PEFT adapter config")
    recorded = config.get("base_model_name_or_path")
    if recorded is not None and not isinstance(recorded, str):
        raise ModelSourceError(f"{folder / ADAPTER_CONFIG}: field 'base_model_name_or_path' is not a string")
    return config


def check_weights(folder: Path, what: str, names: Sequence[str]) -> None:
    """Raise :class:`ModelSourceError` if a weights file of ``folder`` is empty, truncated or corrupt (checked from
    its header and sizes, before anything is loaded)."""
    from stk_vqa.fileio import weights_file_problem

    present = [folder / name for name in names if (folder / name).is_file()]
    present += [p for p in sorted(folder.glob("*.safetensors")) if p not in present]
    for path in present:
        problem = weights_file_problem(path)
        if problem:
            raise ModelSourceError(f"{what} {folder}: {problem}; re-save or re-download it")


def _canonical_model_ref(ref: str) -> str:
    """Comparable form of a model reference: a Hub-cache snapshot path becomes its ``org/name``."""
    match = re.search(r"models--([^/\\]+)--([^/\\]+)", ref)
    if match:
        return f"{match.group(1)}/{match.group(2)}"
    return ref.rstrip("/\\")


def same_base_model(recorded: str, given: str) -> bool:
    """Whether an adapter recorded for base ``recorded`` fits base ``given``: the same id, the same folder, or a
    local copy of the same Hub model (same last path component, e.g. ``/models/SmolVLM-256M-Instruct``)."""
    a, b = _canonical_model_ref(recorded), _canonical_model_ref(given)
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return pa.name == pb.name and bool(pa.name)


def default_base_for(adapters: Sequence[str]) -> str:
    """The base model recorded by the first adapter, or SmolVLM-256M-Instruct."""
    for ref in adapters:
        recorded = read_adapter_config(resolve_adapter(ref)).get("base_model_name_or_path")
        if recorded:
            return recorded
    return DEFAULT_BASE_MODEL


def pick_device(device: str = "auto"):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device) -> Any:
    """``auto``: bfloat16 on a GPU that has it, float16 on other GPUs, float32 on CPU (bf16 is slow on CPUs)."""
    import torch

    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
        raise ValueError(f"--dtype {dtype!r}: expected auto, float32, bfloat16 or float16")
    return getattr(torch, dtype)


def load_processor(source: str | Path, what: str):
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(str(source))
    except Exception as err:  # OSError offline / missing files, ValueError for unknown processors
        if Path(str(source)).expanduser().exists() or not looks_like_hub_id(str(source)):
            raise ModelSourceError(f"{what} {source}: its processor could not be loaded ({err})") from None
        raise _hub_failure(str(source), what, err) from None
    processor.tokenizer.padding_side = "left"
    if processor.tokenizer.pad_token_id is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return processor


def load_base_model(source: str, device, dtype, attn_implementation: str = "sdpa"):
    from transformers import AutoModelForImageTextToText

    path = Path(source).expanduser()
    if not path.exists() and not looks_like_hub_id(source):
        raise ModelSourceError(f"base model folder {source!r} does not exist")
    if path.is_dir() and (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file():
        raise ModelSourceError(f"{source} is an adapter, not a base model: pass it as --adapters")
    if path.is_dir():
        check_weights(path, "base model", ("config.json",))
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            str(path) if path.exists() else source, dtype=dtype, attn_implementation=attn_implementation
        )
    except OSError as err:
        if path.exists():
            raise ModelSourceError(f"base model {source}: could not be loaded ({err})") from None
        raise _hub_failure(source, "base model", err) from None
    except Exception as err:  # a corrupt local folder: transformers / safetensors raise many types
        if not path.exists():
            raise
        raise ModelSourceError(f"base model {source}: could not be loaded ({type(err).__name__}: {err})") from None
    return model.to(device).eval()


def _vision_touched(model, adapter_name: str) -> bool:
    marker = f".{adapter_name}."
    return any(
        marker in name and ("vision_model" in name or "connector" in name) for name, _ in model.named_parameters()
    )


def _unique_names(refs: Sequence[str]) -> list[str]:
    """Short display names for adapters: ``name=path`` gives ``name``; else the folder (+ parent if ambiguous)."""
    names = []
    for ref in refs:
        if "=" in ref and not Path(ref).exists():
            names.append(ref.split("=", 1)[0])
            continue
        path = Path(ref.rstrip("/\\"))
        name = path.name
        if name.startswith("checkpoint-") and path.parent.name:
            name = f"{path.parent.name}/{name}"
        names.append(name or ref)
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def _adapter_ref(ref: str) -> str:
    return ref.split("=", 1)[1] if "=" in ref and not Path(ref).exists() else ref


def load_models(
    base: str | None,
    adapters: Sequence[str] = (),
    with_base: bool = True,
    device: str = "auto",
    dtype: str = "auto",
    allow_base_mismatch: bool = False,
    attn_implementation: str = "sdpa",
) -> LoadedModels:
    """The base model (``None``: the first adapter's recorded base) with every adapter attached.

    Candidates are the bare base model (first, when ``with_base`` or when there are no adapters), then one per
    adapter in the given order. An adapter may be given as ``name=path`` to choose its display name.
    """
    adapters = list(adapters or [])
    refs = [_adapter_ref(a) for a in adapters]
    folders = [resolve_adapter(r) for r in refs]  # fail fast, before loading any weights
    configs = [read_adapter_config(f) for f in folders]
    for ref, folder in zip(refs, folders):
        check_weights(folder, f"adapter {ref}:", ADAPTER_WEIGHTS)
        if not any((folder / name).is_file() for name in ADAPTER_WEIGHTS):
            raise ModelSourceError(f"adapter {ref}: {folder} has no {' or '.join(ADAPTER_WEIGHTS)}")
    base = base or default_base_for(refs)
    for ref, config in zip(refs, configs):
        recorded = config.get("base_model_name_or_path")
        if recorded and not allow_base_mismatch and not same_base_model(recorded, base):
            raise ModelSourceError(
                f"adapter {ref} was trained on base model {recorded!r} (adapter_config.json, field "
                f"'base_model_name_or_path'), not on {base!r}: pass --model {recorded} (or --allow_base_mismatch "
                "if it is the same model under another name)"
            )

    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    model = load_base_model(base, torch_device, torch_dtype, attn_implementation)
    base_processor = load_processor(base, "base model")
    candidates: list[Candidate] = []
    if with_base or not adapters:
        candidates.append(Candidate(name="base", kind="base", source=base, processor=base_processor))

    for index, (name, ref, folder, config) in enumerate(zip(_unique_names(adapters), refs, folders, configs)):
        adapter_name = f"adapter_{index}"
        model = _attach_adapter(model, folder, ref, adapter_name, base, config)
        has_processor = any((folder / f).is_file() for f in PROCESSOR_FILES)
        processor = load_processor(folder, f"adapter {ref}") if has_processor else base_processor
        candidates.append(
            Candidate(
                name=name,
                kind="adapter",
                source=ref,
                adapter_name=adapter_name,
                processor=processor,
                touches_vision=_vision_touched(model, adapter_name),
                adapter_config=config,
            )
        )
    model.eval()
    return LoadedModels(model=model, base_source=base, candidates=candidates, device=torch_device, dtype=torch_dtype)


def _attach_adapter(model, folder: Path, ref: str, adapter_name: str, base: str, config: dict):
    """Attach one adapter; weights that do not fit the base become a :class:`ModelSourceError`."""
    from peft import PeftModel

    recorded = config.get("base_model_name_or_path") or "(not recorded)"
    mismatch = (
        f"adapter {ref} does not fit base model {base!r} (it was trained on {recorded!r}, "
        "adapter_config.json field 'base_model_name_or_path')"
    )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if isinstance(model, PeftModel):
                result = model.load_adapter(str(folder), adapter_name=adapter_name)
                missing = list(result.missing_keys)
                unexpected = [k for k in result.unexpected_keys if "lora_" in k or "modules_to_save" in k]
            else:
                model = PeftModel.from_pretrained(model, str(folder), adapter_name=adapter_name)
                missing = [str(w.message) for w in caught if "missing adapter keys" in str(w.message)]
                unexpected = []
        for w in caught:
            if "missing adapter keys" not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    except (RuntimeError, ValueError, KeyError) as err:  # size mismatch / target modules not found
        raise ModelSourceError(f"{mismatch}: {str(err).splitlines()[0]}") from None
    except Exception as err:  # safetensors / torch raise their own types for files they cannot read
        raise ModelSourceError(f"adapter {ref}: its weights cannot be loaded ({type(err).__name__}: {err})") from None
    if missing or unexpected:
        keys = (missing + unexpected)[:3]
        raise ModelSourceError(f"{mismatch}: adapter weights and base layers differ, e.g. {keys}")
    return model
