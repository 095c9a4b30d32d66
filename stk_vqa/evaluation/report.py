"""Scores -> ``results.json``, ``report.md``, ``accuracy_by_family.png``, ``predictions.jsonl`` and a console table.

:func:`build_results` turns the generations of every compared model (and the blind prior's answers) into one
JSON-ready dict; :func:`write_report` writes the four files into a folder atomically (a failed run leaves no
half-written report); :func:`console_table` is the summary printed at the end of a run.
"""

from __future__ import annotations

import io
import json
import platform
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stk_vqa.fileio import atomic_directory

from .items import EvalItem
from .metrics import Scored, count_families, score_one, summarize

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
CHART_FILE = "accuracy_by_family.png"
PREDICTIONS_FILE = "predictions.jsonl"
PRIOR_NAME = "blind_prior"
MAX_LISTED_SKIPS = 20


def family_order(names) -> list[str]:
    """Registered question families in registry order, then any others alphabetically."""
    from stk_vqa.data.questions import FAMILIES

    names = set(names)
    return [n for n in FAMILIES if n in names] + sorted(names - set(FAMILIES))


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in ("stk-vqa", "torch", "transformers", "peft", "datasets", "trl", "accelerate"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def build_results(
    items: Sequence[EvalItem],
    answers: dict[str, dict[str, Any]],
    skipped: dict[int, str],
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(results, prediction records)`` from the answers of each model.

    ``answers[name] = {"kind": ..., "source": ..., "texts": [str|None per item], "finished": [bool per item]}``;
    items in ``skipped`` (index -> reason) are left out of every model's scores.
    """
    evaluated = [i for i in range(len(items)) if i not in skipped]
    count_names = count_families(_golds_by_family(items, evaluated))
    models: dict[str, Any] = {}
    scored_by_model: dict[str, dict[int, Scored]] = {}
    for name, entry in answers.items():
        scored = {
            i: score_one(entry["texts"][i] or "", items[i].answer, items[i].family, entry["finished"][i])
            for i in evaluated
        }
        scored_by_model[name] = scored
        summary = summarize(list(scored.values()), count_names)
        summary["families"] = {f: summary["families"][f] for f in family_order(summary["families"])}
        models[name] = {
            "kind": entry["kind"],
            "source": entry.get("source"),
            **{k: v for k, v in entry.items() if k not in ("kind", "source", "texts", "finished")},
            **summary,
            "n_unfinished": sum(1 for i in evaluated if not entry["finished"][i]),
        }

    family_counts: dict[str, int] = {}
    for i in evaluated:
        family_counts[items[i].family] = family_counts.get(items[i].family, 0) + 1
    skipped_list = [{"source": items[i].source, "image": items[i].image_file or str(items[i].image_key), "reason": r}
                    for i, r in sorted(skipped.items())]  # fmt: skip
    results = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "versions": package_versions(),
        "data": {
            "n_items": len(items),
            "n_evaluated": len(evaluated),
            "n_images": len({items[i].image_key for i in evaluated}),
            "n_skipped": len(skipped),
            "n_skipped_images": len({items[i].image_key for i in skipped}),
            "skipped": skipped_list[:MAX_LISTED_SKIPS],
            "families": {f: family_counts[f] for f in family_order(family_counts)},
            "count_families": sorted(count_names),
        },
        "models": models,
        **(extra or {}),
    }

    records = []
    for i, item in enumerate(items):
        record = {
            "index": i,
            "source": item.source,
            "image_file": item.image_file,
            "question": item.question,
            "answer": item.answer,
            "family": item.family,
            "skipped": skipped.get(i),
            "predictions": {},
        }
        for name, entry in answers.items():
            if i in skipped:
                continue
            s = scored_by_model[name][i]
            record["predictions"][name] = {
                "text": s.pred,
                "finished": bool(entry["finished"][i]),
                "reference_correct": s.reference,
                "exact_correct": s.exact,
            }
        records.append(record)
    return results, records


def _golds_by_family(items: Sequence[EvalItem], indices: Sequence[int]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for i in indices:
        out.setdefault(items[i].family, []).append(items[i].answer)
    return out


# ------------------------------------------------------------------------------------------ formatting


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def render_markdown(results: dict[str, Any]) -> str:
    data, models, config = results["data"], results["models"], results["config"]
    names = list(models)
    families = list(data["families"])
    lines = [f"# {config.get('title') or 'stk-vqa evaluation'}", ""]
    source = f"`{config.get('data')}`" + (f" split `{config.get('split')}`" if config.get("split") else "")
    sampled = f", a random sample (seed {config.get('seed')})" if config.get("max_samples") else ""
    lines += [
        f"- data: {source}: {data['n_evaluated']} questions about {data['n_images']} images{sampled}",
        f"- skipped: {data['n_skipped']} questions whose image could not be opened ({data['n_skipped_images']} images)",
        f"- created {results['created']} with stk-vqa {results['versions'].get('stk-vqa')}, "
        f"transformers {results['versions'].get('transformers')}, peft {results['versions'].get('peft')}",
        "- **exact**: normalised exact match (case, whitespace, trailing punctuation; a generation cut by the "
        "token limit counts as wrong). **reference**: the course benchmark's prefix rule "
        "`pred.strip().lower()[:len(gt)] == gt.strip().lower()[:len(gt)]` (lenient: `10` passes for `1`).",
        "",
        "## Models",
        "",
    ]
    lines += _md_table(
        ["model", "kind", "source"], [[n, models[n]["kind"], f"`{models[n].get('source') or '-'}`"] for n in names]
    )
    lines += ["## Overall", ""]
    lines += _md_table(
        ["model", "n", "exact", "reference", "empty answers", "cut by token limit"],
        [
            [n, m["overall"]["n"], pct(m["overall"]["exact_accuracy"]), pct(m["overall"]["reference_accuracy"]),
             m["overall"]["n_empty"], m["n_unfinished"]]
            for n, m in models.items()
        ],
    )  # fmt: skip
    lines += ["## Accuracy per question family (exact / reference)", "", f"![accuracy per family]({CHART_FILE})", ""]
    lines += _md_table(
        ["family", "n", *names],
        [
            [f, data["families"][f]]
            + [
                f"{pct(models[n]['families'][f]['exact_accuracy'])} / {pct(models[n]['families'][f]['reference_accuracy'])}"
                for n in names
            ]
            for f in families
        ],
    )
    counts = [f for f in families if f in data["count_families"]]
    if counts:
        lines += ["## Counting families: mean absolute error (answers that are no number left out)", ""]
        rows = []
        for f in counts:
            row = [f]
            for n in names:
                fam = models[n]["families"][f]
                mae = "-" if fam["mae"] is None else f"{fam['mae']:.2f}"
                row.append(mae + (f" ({fam['n_unparsed']} not a number)" if fam["n_unparsed"] else ""))
            rows.append(row)
        lines += _md_table(["family", *names], rows)
    categorical = [f for f in families if f not in data["count_families"]]
    if categorical:
        lines += ["## Confusion tables (rows: gold answer, columns: prediction)", ""]
        for n in names:
            for f in categorical:
                conf = models[n]["families"][f]["confusion"]
                lines += [f"### {n}: {f}", ""]
                lines += _md_table(
                    ["gold \\ predicted", *conf["columns"]],
                    [[label, *row] for label, row in zip(conf["labels"], conf["matrix"])],
                )
    if data["skipped"]:
        lines += ["## Skipped (image could not be opened)", ""]
        lines += [f"- {s['source']}: `{s['image']}`: {s['reason']}" for s in data["skipped"]]
        if data["n_skipped"] > len(data["skipped"]):
            lines.append(f"- ... and {data['n_skipped'] - len(data['skipped'])} more")
        lines.append("")
    return "\n".join(lines)


def console_table(results: dict[str, Any]) -> str:
    """Families x models, ``exact% (reference%)``, with an overall row."""
    models, data = results["models"], results["data"]
    names = list(models)
    header = ["family", "n", *names]
    rows = []
    for f in data["families"]:
        cells = [f, str(data["families"][f])]
        for n in names:
            fam = models[n]["families"][f]
            cells.append(f"{pct(fam['exact_accuracy'])} ({pct(fam['reference_accuracy'])})")
        rows.append(cells)
    rows.append(
        ["overall", str(data["n_evaluated"])]
        + [f"{pct(models[n]['overall']['exact_accuracy'])} ({pct(models[n]['overall']['reference_accuracy'])})"
           for n in names]
    )  # fmt: skip
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    fmt = lambda r: "  ".join(v.ljust(w) if c == 0 else v.rjust(w) for c, (v, w) in enumerate(zip(r, widths)))  # noqa: E731
    out = [fmt(header), "  ".join("-" * w for w in widths), *map(fmt, rows[:-1])]
    out += ["  ".join("-" * w for w in widths), fmt(rows[-1])]
    out.append("exact accuracy (course reference rule in parentheses)")
    if data["n_skipped"]:
        out.append(f"{data['n_skipped']} questions skipped: their image could not be opened")
    return "\n".join(out)


def render_chart(results: dict[str, Any]) -> bytes:
    """PNG: grouped bars of exact and reference accuracy per family, one bar per compared model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = results["models"]
    names = list(models)
    families = list(results["data"]["families"]) + ["overall"]
    width = 0.8 / max(len(names), 1)
    fig = Figure(figsize=(max(6.0, 1.1 * len(families) * max(1, len(names)) ** 0.5 + 2), 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True)
    for ax, metric, title in zip(axes, ("exact_accuracy", "reference_accuracy"), ("exact match", "course rule")):
        for k, name in enumerate(names):
            values = []
            for f in families:
                block = models[name]["overall"] if f == "overall" else models[name]["families"].get(f, {})
                values.append(100 * (block.get(metric) or 0.0))
            xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(families))]
            ax.bar(xs, values, width=width, label=name)
        ax.set_ylim(0, 100)
        ax.set_ylabel(f"accuracy, {title} (%)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize="small", ncols=min(len(names), 4), loc="upper left", bbox_to_anchor=(0, 1.2))
    axes[-1].set_xticks(range(len(families)), families, rotation=30, ha="right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_report(
    out_dir: str | Path,
    results: dict[str, Any],
    records: Sequence[dict],
    overwrite: bool = False,
    inputs: Sequence[str | Path | None] = (),
    containers: Sequence[str | Path | None] = (),
) -> Path:
    """Write the four report files into ``out_dir`` (replaced as a whole, atomically; never onto ``inputs``, see
    :func:`stk_vqa.fileio.atomic_directory`)."""
    with atomic_directory(
        out_dir, overwrite=overwrite, inputs=inputs, containers=containers, command="evaluate"
    ) as tmp:
        (tmp / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        (tmp / REPORT_FILE).write_text(render_markdown(results), encoding="utf-8")
        (tmp / CHART_FILE).write_bytes(render_chart(results))
        with open(tmp / PREDICTIONS_FILE, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return Path(out_dir)
