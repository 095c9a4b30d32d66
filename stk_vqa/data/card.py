"""The dataset card (``README.md``) of a built dataset: Hub YAML metadata + a readable account."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from stk_vqa import __version__
from stk_vqa.fileio import atomic_write_text

from .balancing import format_distribution
from .questions import FAMILIES


def card_metadata_yaml(dataset_dict) -> str:
    """YAML front matter with ``configs`` (data files per split) and ``dataset_info`` (features, splits),
    made with ``datasets``' own helpers, as ``push_to_hub`` would write it."""
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    first = next(iter(dataset_dict.values()))
    splits = SplitDict()
    for name, ds in dataset_dict.items():
        splits.add(SplitInfo(name=name, num_examples=len(ds), num_bytes=ds.data.nbytes))
    info = DatasetInfo(features=first.features, splits=splits)
    card_data = DatasetCardData(
        license="other",
        task_categories=["visual-question-answering"],
        language=["en"],
        tags=["supertuxkart", "vqa", "synthetic", "stk-vqa"],
        pretty_name="SuperTuxKart VQA (stk-vqa)",
    )
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    MetadataConfigs(
        {"default": {"data_files": [{"split": name, "path": f"data/{name}-*"} for name in dataset_dict]}}
    ).to_dataset_card_data(card_data)
    return card_data.to_yaml()


BOX_METHOD_NOTES = {
    None: "boxes as given in the source info files (the course dataset's come from the engine's instance labels)",
    "engine-instance-map": (
        "frames rendered by `stk-vqa render`; boxes are the tight inclusive boxes of each instance's pixels in the "
        "engine's own instance map (pysupertuxkart 1.1.2, the course dataset's engine), as the course's were"
    ),
    "chase-camera-model+depth-test": (
        "frames rendered by an earlier `stk-vqa render`; kart boxes derived from a simulated chase camera and a "
        "depth test (an approximation: about 1 in 4 box-dependent answers differed from the engine's)"
    ),
    "none": "frames rendered without boxes: they yield no questions",
}


def box_method_lines(box_methods) -> list[str]:
    if not box_methods:
        return ["- legacy QA file: labels as given in the file"]
    return [
        f"- {count} frame(s): `{method or 'not stated'}`: {BOX_METHOD_NOTES.get(method, 'see the source')}"
        for method, count in sorted(box_methods.items(), key=lambda kv: -kv[1])
    ]


def write_dataset_card(folder: Path, dataset_dict, config, report) -> Path:

    lines = [
        "---",
        card_metadata_yaml(dataset_dict),
        "---",
        "",
        "# SuperTuxKart VQA (stk-vqa)",
        "",
        "Image-question-answer pairs about SuperTuxKart race scenes, made by "
        f"stk-vqa {__version__} from frames in the course layout "
        "(`<frame>_info.json` + `<frame>_<view>_im.jpg`). Labels come from the frames' detections with the "
        "course dataset's rules (kart boxes scaled with truncation, karts under 5 px or outside the image "
        "dropped, ego = the kart nearest the image centre, ties to the first detection).",
        "",
        "Rows are in TRL's conversational vision format: `images` (one image) and `messages` "
        + (
            "(one conversation per image, one user/assistant turn per question)"
            if config.group_by_image
            else "(one user question, one assistant answer)"
        )
        + ", plus `question`, `answer`, `family`, `frame_id`, `view_index`, `track`, `image_file`.",
        "",
        "```python",
        "from datasets import load_dataset",
        f"ds = load_dataset({str(Path(config.out_dir))!r})  # or the Hub id",
        "```",
        "",
        *(
            [
                "**Control dataset: the train split's images are shuffled across its rows** (`--shuffle_images`): "
                "each question is paired with another row's image, so nothing in it can be learnt from pixels.",
                "",
            ]
            if config.shuffle_images
            else []
        ),
        "## Where the boxes come from",
        "",
        *box_method_lines(report.box_methods),
        "",
        "## Splits",
        "",
        "| split | rows | QA pairs before selection |",
        "| --- | ---: | ---: |",
    ]
    for name, ds in dataset_dict.items():
        lines.append(f"| {name} | {len(ds)} | {report.rows_before[name]} |")
    lines += ["", "## Question families", "", "| family | default | templates | answer |", "| --- | --- | --- | --- |"]
    used = {f for dist in report.distribution_before.values() for f in dist}
    for fam in FAMILIES.values():
        if fam.name in used:
            templates = "<br>".join(f"`{t}`" for t in fam.templates)
            lines.append(f"| {fam.name} | {'yes' if fam.default else 'no'} | {templates} | {fam.description} |")
    selection = []
    if config.balance:
        selection.append(
            "CLEVR-style rejection sampling per family (reject an answer above 1.1x the runner-up "
            "or 5x the median count)"
        )
    if config.grader_style:
        selection.append(f"grader style: {config.grader_style} items per family, zero directional counts dropped")
    lines += ["", "## Answers per family", ""]
    if selection:
        lines.append("Selection: " + "; ".join(selection) + ". Counts are `before -> after`.")
        lines.append("")
    for name in dataset_dict:
        after = report.distribution_after[name] if selection else None
        lines += [f"### {name}", "", format_distribution(report.distribution_before[name], after), ""]
    lines += [
        "## How it was made",
        "",
        f"- stk-vqa {__version__}, Python {sys.version.split()[0]}",
        f"- skipped: {report.skipped_frames} bad frame(s), {report.skipped_images} bad image(s)",
        "- build options:",
        "",
        "```json",
        json.dumps({k: v for k, v in dataclasses.asdict(config).items() if k not in {"overwrite"}}, indent=2),
        "```",
        "",
    ]
    return atomic_write_text(folder / "README.md", "\n".join(lines))
