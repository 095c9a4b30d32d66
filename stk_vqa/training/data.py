"""Training data: the DatasetDict of a recipe (a local folder or a Hub id), checked for the VLM columns."""

from __future__ import annotations

from stk_vqa.training.configs import RecipeError, StkScriptArguments

REQUIRED_COLUMNS = ("images", "messages")


def load_training_data(script_args: StkScriptArguments, with_eval: bool = True):
    """Load the DatasetDict (local folder or Hub id) and return ``(train, eval or None)``, checked for the VLM columns."""
    from datasets import load_dataset

    name = script_args.dataset_name
    try:
        dataset = load_dataset(name, name=script_args.dataset_config, streaming=script_args.dataset_streaming)
    except FileNotFoundError as error:
        raise RecipeError(f"dataset {name!r} not found (a local folder or a Hub dataset id): {error}") from None
    splits = list(dataset)
    wanted = [script_args.dataset_train_split] + ([script_args.dataset_test_split] if with_eval else [])
    for split in wanted:
        if split not in dataset:
            raise RecipeError(f"dataset {name}: no split {split!r} (it has {splits})")
        columns = dataset[split].column_names or []
        missing = [column for column in REQUIRED_COLUMNS if column not in columns]
        if missing:
            raise RecipeError(
                f"dataset {name}, split {split!r}: missing column(s) {missing}; a vision-language SFT dataset needs "
                f"'images' (a list of images per row) and 'messages' (the chat), it has {columns}"
            )
    train = _first(dataset[script_args.dataset_train_split], script_args.max_train_samples)
    evaluation = _first(dataset[script_args.dataset_test_split], script_args.max_eval_samples) if with_eval else None
    check_images(train, name, script_args.dataset_train_split)
    if evaluation is not None:
        check_images(evaluation, name, script_args.dataset_test_split)
    return train, evaluation


def check_images(split, name: str, split_name: str) -> None:
    """Decode every distinct image of a split once, before training: one that does not decode is named (row and
    file) in a :class:`RecipeError` instead of failing deep inside a collator batch. Streamed splits are not checked.
    """
    import hashlib
    import io

    import datasets
    from PIL import Image

    if not isinstance(split, datasets.Dataset) or "images" not in split.column_names:
        return
    feature = split.features["images"]
    column = split.select_columns(["images"])
    if isinstance(feature, datasets.Image):
        column = column.cast_column("images", datasets.Image(decode=False))
    elif isinstance(getattr(feature, "feature", None), datasets.Image):
        column = column.cast_column("images", datasets.Sequence(datasets.Image(decode=False)))
    else:
        return
    seen: set = set()
    for start in range(0, len(column), 1000):
        for offset, cell in enumerate(column[start : start + 1000]["images"]):
            row = start + offset
            cells = cell if isinstance(cell, list) else [cell]
            if not cells or cells[0] is None:
                raise RecipeError(f"dataset {name}, split {split_name!r}, row {row}: field 'images' is empty")
            for image in cells:
                data, path = (image or {}).get("bytes"), (image or {}).get("path")
                key = hashlib.sha1(data).digest() if data else path
                if key in seen:
                    continue
                seen.add(key)
                try:
                    with Image.open(io.BytesIO(data) if data else path) as opened:
                        opened.load()
                except Exception as error:  # PIL raises many types for truncated or non-image data
                    raise RecipeError(
                        f"dataset {name}, split {split_name!r}, row {row} (image {path or '(bytes)'}): cannot be "
                        f"decoded ({type(error).__name__}: {error}); rebuild the dataset (stk-vqa build drops bad images)"
                    ) from None


def _first(split, n: int | None):
    """The first ``n`` rows of a split (all when ``n`` is None); works for streamed splits too."""
    from datasets import IterableDataset

    if n is None:
        return split
    if isinstance(split, IterableDataset):
        return split.take(n)
    return split.select(range(min(n, len(split))))
