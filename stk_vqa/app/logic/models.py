"""The models side by side: :class:`ModelBank` loads the base model and adapters once (lazily) and caches them;
:func:`ask` answers one question with every model, :func:`run_family` scores a view's questions."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from stk_vqa.data.questions import FAMILIES, QAPair

from .config import AppError
from .views import ViewData, _md, image_bytes, reference_answer, view_pairs

logger = logging.getLogger(__name__)

FREE_QUESTION_TOKENS = 32
"""Generation limit for a free-text question (a generated one gets the evaluation's budget)."""


class ModelBank:
    """The base model and the adapters, loaded once (on first use) and shared by every page.

    An adapter that cannot be used (missing, not an adapter, made for another base, weights that do not fit) is
    left out with a message; the base model and the other adapters still answer."""

    def __init__(self, model: str | None, adapters: Sequence[str] = (), device: str = "auto", dtype: str = "auto"):
        self.model = model
        self.adapters = list(adapters)
        self.device = device
        self.dtype = dtype
        self._loaded = None
        self.problems: list[str] = []
        self._lock = threading.RLock()

    def configure(self, model: str | None, adapters: Sequence[str]) -> None:
        """Use other models (loaded on the next question)."""
        with self._lock:
            self.model = model or None
            self.adapters = list(adapters)
            self._loaded = None
            self.problems = []

    @property
    def loaded(self):
        return self._loaded

    def describe_markdown(self) -> str:
        base = self.model or "(the first adapter's recorded base)"
        lines = [f"**base** `{base}`"]
        lines += [f"**adapter** `{a}`" for a in self.adapters] or ["no adapter"]
        state = "loaded" if self._loaded is not None else "loaded on the first question"
        lines.append(f"({state})")
        lines += [f"⚠️ {_md(p)}" for p in self.problems]
        return " · ".join(lines)

    def _usable_adapters(self, base: str | None) -> tuple[list[str], list[str]]:
        from stk_vqa.evaluation.models import (
            ModelSourceError,
            _adapter_ref,
            read_adapter_config,
            resolve_adapter,
            same_base_model,
        )

        good, problems = [], []
        for spec in self.adapters:
            ref = _adapter_ref(spec)
            try:
                config = read_adapter_config(resolve_adapter(ref))
            except ModelSourceError as err:
                problems.append(f"adapter left out: {err}")
                continue
            recorded = config.get("base_model_name_or_path")
            if base and recorded and not same_base_model(recorded, base):
                problems.append(f"adapter left out: {ref} was trained on base model {recorded!r}, not on {base!r} "
                                "(adapter_config.json, field 'base_model_name_or_path')")  # fmt: skip
                continue
            good.append(spec)
        return good, problems

    def get(self):
        """The :class:`~stk_vqa.evaluation.models.LoadedModels` (loading them on the first call)."""
        from stk_vqa.evaluation.models import ModelSourceError, _adapter_ref, default_base_for, load_models

        with self._lock:
            if self._loaded is not None:
                return self._loaded
            base = self.model
            if base is None:
                good, problems = self._usable_adapters(None)
                if not good:
                    raise AppError("no base model given and no usable adapter to take one from: "
                                   + " ".join(problems))  # fmt: skip
                base = default_base_for([_adapter_ref(a) for a in good[:1]])
            good, problems = self._usable_adapters(base)
            while True:
                try:
                    loaded = load_models(base, good, with_base=True, device=self.device, dtype=self.dtype)
                    break
                except ModelSourceError as err:
                    culprit = next((a for a in good if _adapter_ref(a) in str(err)), None)
                    if culprit is None:  # the base model itself
                        raise AppError(f"the models could not be loaded: {err}") from None
                    problems.append(f"adapter left out: {err}")
                    good.remove(culprit)
                except OSError as err:
                    raise AppError(f"the models could not be loaded: {err}") from None
            self._loaded = loaded
            self.problems = problems
            return loaded


@dataclass
class AskResult:
    question: str
    reference: QAPair | None
    rows: list[list[str]]
    """``[model, answer, verdict]`` per model (verdict empty without a reference)."""
    problems: list[str]


def _verdict(pred: str, gold: str, family: str, finished: bool) -> str:
    from stk_vqa.evaluation.metrics import score_one

    scored = score_one(pred, gold, family, finished)
    if scored.exact:
        return "✓ right"
    return "~ right by the course's prefix rule only" if scored.reference else "✗ wrong"


def _generate(bank: ModelBank, view: ViewData, questions: Sequence[tuple[str, str, str]], max_new_tokens):
    """Answers of every model for ``(question, answer, family)`` triples about the view's image."""
    import hashlib

    from stk_vqa.data.questions import match_template
    from stk_vqa.evaluation.inference import generate_answers
    from stk_vqa.evaluation.items import EvalItem

    data = image_bytes(view)
    key = hashlib.sha1(data).hexdigest()
    items = [EvalItem(question=q, answer=a, family=f, template=match_template(q)[1], image_key=key, image=data,
                      source=view.label) for q, a, f in questions]  # fmt: skip
    loaded = bank.get()
    with bank._lock:  # one generation at a time: the active adapter is model-wide state
        generations, skipped = generate_answers(loaded, items, batch_size=16, max_new_tokens=max_new_tokens,
                                                progress=False)  # fmt: skip
    if skipped:
        raise AppError(f"{view.label}: the image could not be read ({next(iter(skipped.values()))})")
    return loaded, generations


def ask(bank: ModelBank, view: ViewData, question: str) -> AskResult:
    """The question answered by the base model and every adapter; the reference answer when it is one of the
    view's generated questions."""
    question = (question or "").strip()
    if not question:
        raise AppError("type a question, or pick one of the view's questions")
    reference = reference_answer(view, question)
    triple = (question, reference.answer if reference else "", reference.family if reference else "")
    # A generated question gets the evaluation's token budget (so answers match `stk-vqa evaluate`'s).
    loaded, generations = _generate(bank, view, [triple], None if reference else FREE_QUESTION_TOKENS)
    rows = []
    for candidate in loaded.candidates:
        gen = generations[candidate.name][0]
        text = gen.text if gen else ""
        verdict = _verdict(text, reference.answer, reference.family, gen.finished) if reference and gen else ""
        rows.append([candidate.name, text if text else "(empty answer)", verdict])
    return AskResult(question, reference, rows, list(bank.problems))


def ask_markdown(result: AskResult) -> str:
    lines = [f"**Q:** {_md(result.question)}", ""]
    if result.reference is not None:
        lines.append(f"**reference answer:** `{_md(result.reference.answer)}` (family `{result.reference.family}`)")
    else:
        lines.append("*(not one of this view's generated questions: no reference answer)*")
    lines += ["", "| model | answer | |", "|---|---|---|"]
    lines += [f"| {_md(m)} | {_md(a)} | {v} |" for m, a, v in result.rows]
    lines += ["", *[f"⚠️ {_md(p)}" for p in result.problems]]
    return "\n".join(lines)


@dataclass
class FamilyRun:
    family: str
    header: list[str]
    rows: list[list[str]]
    """``[family (only for all families), question, reference, answer of each model...]``; answers marked ✓ / ✗
    (exact match)."""
    summary: list[list[str]]
    """``[model, right (exact), right (course rule)]``."""
    problems: list[str]


def run_family(bank: ModelBank, view: ViewData, family: str = "all") -> FamilyRun:
    """Every model on the view's generated questions of ``family`` (``all``: every family), scored."""
    from stk_vqa.evaluation.metrics import score_one

    pairs = view_pairs(view, "all")
    if family and family != "all":
        pairs = [p for p in pairs if p.family == family]
    if not pairs:
        raise AppError(f"{view.label}: no question of family {family!r} for this view")
    loaded, generations = _generate(bank, view, [(p.question, p.answer, p.family) for p in pairs], None)
    names = [c.name for c in loaded.candidates]
    rows = []
    right = {n: [0, 0] for n in names}
    one_family = bool(family and family != "all")
    for i, pair in enumerate(pairs):
        row = ([] if one_family else [pair.family]) + [pair.question, pair.answer]
        for name in names:
            gen = generations[name][i]
            scored = score_one(gen.text if gen else "", pair.answer, pair.family, bool(gen and gen.finished))
            right[name][0] += scored.exact
            right[name][1] += scored.reference
            row.append(f"{'✓' if scored.exact else '✗'} {scored.pred or '(empty)'}")
        rows.append(row)
    n = len(pairs)
    summary = [[name, f"{e}/{n}", f"{r}/{n}"] for name, (e, r) in right.items()]
    header = ([] if one_family else ["family"]) + ["question", "reference", *names]
    return FamilyRun(family or "all", header, rows, summary, list(bank.problems))


def family_run_markdown(run: FamilyRun) -> str:
    lines = [f"**{len(run.rows)} question(s), family `{run.family}`** · right: "
             + " · ".join(f"**{m}** {e} exact ({r} by the course's rule)" for m, e, r in run.summary), ""]  # fmt: skip
    lines += ["| " + " | ".join(run.header) + " |", "|" + "---|" * len(run.header)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in run.rows]
    lines += ["", *[f"⚠️ {_md(p)}" for p in run.problems]]
    return "\n".join(lines)


def family_choices() -> list[str]:
    return ["all", *FAMILIES]
