"""``stk-vqa evaluate`` / ``stk-vqa test CHECKPOINT`` / ``stk-vqa ask`` (Fire maps the flags to the keywords)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from .items import DataSourceError, EvalItem, load_items, training_qa
from .models import DEFAULT_BASE_MODEL, ModelSourceError


def _as_list(value: Any) -> list[str]:
    """Fire gives a tuple for ``--adapters a,b`` written as a list, a str otherwise; accept both."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [part.strip() for part in str(value).split(",") if part.strip()]


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
    entry = {"kind": "prior", "source": f"{source}", "texts": texts, "finished": [True] * len(items), "n_train": len(qa)}
    return entry, note


def run_evaluation(
    data: str,
    model: str | None = None,
    adapters: Sequence[str] = (),
    split: str = "validation",
    data_dir: str | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    out_dir: str = "eval_report",
    with_base: bool = False,
    prior: bool = True,
    prior_data: str | None = None,
    prior_split: str = "train",
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    reuse_vision: bool = True,
    device: str = "auto",
    dtype: str = "auto",
    allow_base_mismatch: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    title: str | None = None,
) -> dict[str, Any]:
    """Library entry of ``stk-vqa evaluate``: returns the results dict (also written to ``out_dir``)."""
    from .inference import generate_answers
    from .models import load_models
    from .report import build_results, console_table, write_report

    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    adapters = list(adapters)
    config = dict(
        title=title, data=str(data), split=None if str(data).endswith(".json") else split, data_dir=data_dir,
        max_samples=max_samples, seed=seed, model=model, adapters=adapters, with_base=with_base,
        prior_data=prior_data, prior_split=prior_split, batch_size=batch_size, max_new_tokens=max_new_tokens,
        reuse_vision=reuse_vision, device=device, dtype=dtype,
    )  # fmt: skip
    items = load_items(data, split=split, data_dir=data_dir, max_samples=max_samples, seed=seed)
    if not items:
        raise DataSourceError(f"{data}: no questions to evaluate")
    answers: dict[str, dict[str, Any]] = {}
    notes = []
    if prior:
        entry, note = blind_prior_answers(items, data, prior_data, prior_split)
        notes.append(note)
        if entry is not None:
            answers["blind_prior"] = entry

    loaded = load_models(model, adapters, with_base=with_base, device=device, dtype=dtype,
                         allow_base_mismatch=allow_base_mismatch)  # fmt: skip
    config["model"] = loaded.base_source
    start = time.perf_counter()
    generations, skipped = generate_answers(
        loaded, items, batch_size=batch_size, max_new_tokens=max_new_tokens, reuse_vision=reuse_vision,
        progress=progress,
    )  # fmt: skip
    seconds = time.perf_counter() - start
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
    results, records = build_results(items, answers, skipped, config, extra)
    write_report(out, results, records, overwrite=overwrite)
    print(console_table(results))
    for note in notes:
        print(note)
    print(f"report: {out / 'report.md'}")
    return results


def _fail(err: Exception):
    raise SystemExit(f"error: {err}") from None


def evaluate(
    data: str | None = None,
    model: str | None = None,
    adapters: Any = None,
    split: str = "validation",
    data_dir: str | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    out_dir: str = "eval_report",
    with_base: bool = False,
    prior: bool = True,
    prior_data: str | None = None,
    prior_split: str = "train",
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    reuse_vision: bool = True,
    device: str = "auto",
    dtype: str = "auto",
    allow_base_mismatch: bool = False,
    overwrite: bool = False,
    title: str | None = None,
    progress: bool = True,
) -> str:
    """Benchmark a base model and adapters on a QA split; write results.json, report.md, a chart, predictions.jsonl.

    Args:
        data: a DatasetDict folder (``stk-vqa build`` output), a Hub dataset id, or a legacy QA json
            (``[{image_file, question, answer}]``, e.g. the course's ``data/valid_grader/balanced_qa_pairs.json``).
        model: base model folder or Hub id (default: the first adapter's recorded base, else SmolVLM-256M-Instruct).
        adapters: LoRA adapter folders or Hub ids, comma-separated (``name=path`` sets a display name); they are
            compared side by side on the same questions.
        split: split of a DatasetDict to evaluate.
        data_dir: folder the legacy json's ``image_file`` paths are relative to (default: the json's grandparent,
            the course layout, or its folder).
        max_samples: evaluate a random sample of this many questions (drawn with ``seed``).
        seed: sampling seed.
        out_dir: report folder (must not exist unless ``--overwrite``).
        with_base: also evaluate the base model without adapter (always, when no adapter is given).
        prior: include the blind prior baseline (most frequent training answer per question template).
        prior_data: training data of the blind prior (a DatasetDict or legacy json; default: ``data``'s
            ``prior_split``).
        prior_split: split of ``prior_data`` holding the training answers.
        batch_size: questions per generation batch.
        max_new_tokens: generation limit (default: the longest gold answer + 5 tokens).
        reuse_vision: encode each image once for all its questions (``--noreuse_vision``: once per question).
        device: ``auto`` (cuda if available), ``cpu``, ``cuda``, ``cuda:1``...
        dtype: ``auto`` (bf16 on GPU, fp32 on CPU), ``float32``, ``bfloat16``, ``float16``.
        allow_base_mismatch: evaluate an adapter on a base model other than the one it records.
        overwrite: replace ``out_dir``.
        title: report title.
        progress: show a progress bar during inference (``--noprogress`` for quiet logs).

    Returns:
        The report folder.
    """
    if not data:
        raise SystemExit("error: --data is required (a DatasetDict folder, a Hub dataset id or a legacy QA json)")
    try:
        run_evaluation(
            data, model=model, adapters=_as_list(adapters), split=split, data_dir=data_dir, max_samples=max_samples,
            seed=seed, out_dir=out_dir, with_base=with_base, prior=prior, prior_data=prior_data,
            prior_split=prior_split, batch_size=batch_size, max_new_tokens=max_new_tokens, reuse_vision=reuse_vision,
            device=device, dtype=dtype, allow_base_mismatch=allow_base_mismatch, overwrite=overwrite,
            progress=progress, title=title,
        )  # fmt: skip
    except (DataSourceError, ModelSourceError, FileExistsError, ValueError) as err:
        _fail(err)
    return str(out_dir)


def test(checkpoint: str, data: str | None = None, out_dir: str | None = None, **kwargs) -> str:
    """Evaluate one checkpoint (an adapter folder or Hub id, or a full model folder): the original project's alias.

    Args:
        checkpoint: adapter folder / Hub id (its recorded base model is used), or a full model folder.
        data: as for ``evaluate`` (a DatasetDict folder, Hub id, or legacy QA json).
        out_dir: report folder (default: ``<checkpoint>/eval`` for a local checkpoint, else ``eval_report``).
        **kwargs: any other ``evaluate`` flag (``--max_samples``, ``--with_base``, ``--batch_size``...).

    Returns:
        The report folder.
    """
    from .models import ADAPTER_CONFIG

    path = Path(checkpoint)
    is_full_model = path.is_dir() and (path / "config.json").is_file() and not (path / ADAPTER_CONFIG).is_file()
    if out_dir is None:
        out_dir = str(path / "eval") if path.is_dir() else "eval_report"
    if is_full_model:
        return evaluate(data=data, model=checkpoint, out_dir=out_dir, **kwargs)
    return evaluate(data=data, adapters=[checkpoint], out_dir=out_dir, **kwargs)


def ask(
    image: str,
    question: str,
    model: str | None = None,
    adapter: str | None = None,
    max_new_tokens: int = 32,
    device: str = "auto",
    dtype: str = "auto",
    allow_base_mismatch: bool = False,
) -> str:
    """Answer one question about one image (for poking at a model).

    Args:
        image: image file.
        question: the question, e.g. "What kart is the ego car?".
        model: base model folder or Hub id (default: the adapter's recorded base, else SmolVLM-256M-Instruct).
        adapter: LoRA adapter folder or Hub id.
        max_new_tokens: generation limit.
        device: ``auto``, ``cpu``, ``cuda``...
        dtype: ``auto``, ``float32``, ``bfloat16``, ``float16``.
        allow_base_mismatch: use the adapter on a base model other than the one it records.

    Returns:
        The answer (printed by the command line).
    """
    from .inference import generate_answers
    from .items import UnreadableImageError, open_image
    from .models import load_models

    try:
        open_image(image)  # a clear error before loading the model
        adapters = [adapter] if adapter else []
        loaded = load_models(model, adapters, with_base=not adapters, device=device, dtype=dtype,
                             allow_base_mismatch=allow_base_mismatch)  # fmt: skip
    except (UnreadableImageError, ModelSourceError, ValueError) as err:
        _fail(err)
    item = EvalItem(question=question, answer="", family="", template=question, image_key=image, image=image,
                    source="ask")  # fmt: skip
    generations, _ = generate_answers(loaded, [item], batch_size=1, max_new_tokens=max_new_tokens, progress=False)
    return generations[loaded.candidates[-1].name][0].text


__all__ = ["evaluate", "test", "ask", "run_evaluation", "DEFAULT_BASE_MODEL"]
