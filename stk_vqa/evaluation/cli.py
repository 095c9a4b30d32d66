"""``stk-vqa evaluate`` / ``stk-vqa test CHECKPOINT`` / ``stk-vqa ask``: each takes its config dataclass
(:mod:`stk_vqa.evaluation.configs`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .configs import DEFAULT_BASE_MODEL, AskConfig, EvalConfig, TestConfig
from .items import DataSourceError, EvalItem, load_items, training_qa


def blind_prior_answers(
    items: Sequence[EvalItem], data: str, prior_data: str | None, prior_split: str
) -> tuple[dict[str, Any] | None, str]:
    """The blind prior's answers (or None) and a note saying where its training answers came from."""
    from .baselines import BlindPrior

    source = prior_data
    if source is None:
        if str(data).endswith(".json"):
            return None, "blind prior not computed: legacy json data has no training split (pass --prior_data)"
        source = data
    try:
        qa = training_qa(source, prior_split)
    except DataSourceError as err:
        return None, f"blind prior not computed: {err}"
    prior = BlindPrior.fit(qa)
    texts = [prior.predict(item.template, item.family) for item in items]
    note = f"blind prior from {len(qa)} training answers of {source}" + (
        "" if str(source).endswith(".json") else f" [{prior_split}]"
    )
    entry = {
        "kind": "prior",
        "source": f"{source}",
        "texts": texts,
        "finished": [True] * len(items),
        "n_train": len(qa),
    }
    return entry, note


def run_evaluation(config: EvalConfig) -> dict[str, Any]:
    """Evaluate ``config.model`` and ``config.adapters`` on ``config.data``: returns the results dict (also written to
    ``config.out_dir``: results.json, report.md, the chart, predictions.jsonl)."""
    from stk_vqa.fileio import guard_output_dir

    from .inference import generate_answers
    from .models import _adapter_ref, load_models
    from .report import build_results, console_table, write_report

    if not config.data:
        raise ValueError("--data is required (a DatasetDict folder, a Hub dataset id or a legacy QA json)")
    out = Path(config.out_dir)
    local = lambda ref: ref if ref and Path(ref).expanduser().exists() else None  # noqa: E731
    inputs = [local(config.data), local(config.prior_data), local(config.model), local(config.data_dir)]
    containers = [local(_adapter_ref(a)) for a in config.adapters]  # `test`'s default report is <adapter>/eval
    guard_output_dir(out, inputs, containers, overwrite=config.overwrite, what="out_dir")  # before any work
    legacy = str(config.data).endswith(".json")
    recorded = {key: value for key, value in asdict(config).items()
                if key not in ("out_dir", "overwrite", "prior", "progress", "allow_base_mismatch")}  # fmt: skip
    recorded.update(data=str(config.data), split=None if legacy else config.split)
    items = load_items(config.data, split=config.split, data_dir=config.data_dir, max_samples=config.max_samples,
                       seed=config.seed)  # fmt: skip
    if not items:
        raise DataSourceError(f"{config.data}: no questions to evaluate")
    inputs += sorted({str(Path(item.image).parent) for item in items if isinstance(item.image, str)})
    answers: dict[str, dict[str, Any]] = {}
    notes = []
    if config.prior:
        entry, note = blind_prior_answers(items, config.data, config.prior_data, config.prior_split)
        notes.append(note)
        if entry is not None:
            answers["blind_prior"] = entry

    loaded = load_models(config.model, config.adapters, with_base=config.with_base, device=config.device,
                         dtype=config.dtype, allow_base_mismatch=config.allow_base_mismatch)  # fmt: skip
    recorded["model"] = loaded.base_source
    start = time.perf_counter()
    generations, skipped = generate_answers(
        loaded, items, batch_size=config.batch_size, max_new_tokens=config.max_new_tokens,
        reuse_vision=config.reuse_vision, progress=config.progress,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if len(skipped) == len(items):
        first = next(iter(skipped.values()))
        raise DataSourceError(f"{config.data}: no image could be opened ({len(items)} questions, e.g. {first}); "
                              f"{out} not written")  # fmt: skip
    for candidate in loaded.candidates:
        gens = generations[candidate.name]
        answers[candidate.name] = {
            "kind": candidate.kind,
            "source": candidate.source,
            "texts": [g.text if g else None for g in gens],
            "finished": [bool(g and g.finished) for g in gens],
        }
    n_answers = (len(items) - len(skipped)) * len(loaded.candidates)
    extra = {
        "notes": notes,
        "timing": {
            "device": str(loaded.device),
            "dtype": str(loaded.dtype).replace("torch.", ""),
            "inference_seconds": round(seconds, 3),
            "answers_per_second": round(n_answers / seconds, 3) if seconds > 0 else None,
        },
    }
    results, records = build_results(items, answers, skipped, recorded, extra)
    write_report(out, results, records, overwrite=config.overwrite, inputs=inputs, containers=containers)
    print(console_table(results))
    for note in notes:
        print(note)
    print(f"report: {out / 'report.md'}")
    return results


evaluate = run_evaluation
"""``stk-vqa evaluate``: the command is the library function."""


def test(config: TestConfig) -> dict[str, Any]:
    """Evaluate one checkpoint: an adapter (with its recorded base) or a full model folder."""
    from .models import ADAPTER_CONFIG

    path = Path(config.checkpoint)
    is_full_model = path.is_dir() and (path / "config.json").is_file() and not (path / ADAPTER_CONFIG).is_file()
    fields = {k: v for k, v in asdict(config).items() if k in EvalConfig.__dataclass_fields__}
    fields["out_dir"] = config.out_dir or (str(path / "eval") if path.is_dir() else "eval_report")
    if is_full_model:
        fields["model"] = config.checkpoint
    else:
        fields["adapters"] = [config.checkpoint]
    return run_evaluation(EvalConfig(**fields))


def ask(config: AskConfig) -> str:
    """Answer one question about one image; prints and returns the answer."""
    from .inference import generate_answers
    from .items import open_image
    from .models import load_models

    open_image(config.image)  # a clear error before loading the model
    adapters = [config.adapter] if config.adapter else []
    loaded = load_models(config.model, adapters, with_base=not adapters, device=config.device, dtype=config.dtype,
                         allow_base_mismatch=config.allow_base_mismatch)  # fmt: skip
    item = EvalItem(question=config.question, answer="", family="", template=config.question, image_key=config.image,
                    image=config.image, source="ask")  # fmt: skip
    generations, _ = generate_answers(loaded, [item], batch_size=1, max_new_tokens=config.max_new_tokens,
                                      progress=False)  # fmt: skip
    answer = generations[loaded.candidates[-1].name][0].text
    print(answer)
    return answer


__all__ = ["evaluate", "test", "ask", "run_evaluation", "EvalConfig", "TestConfig", "AskConfig", "DEFAULT_BASE_MODEL"]
