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
    return train, evaluation


def _first(split, n: int | None):
    """The first ``n`` rows of a split (all when ``n`` is None); works for streamed splits too."""
    from datasets import IterableDataset

    if n is None:
        return split
    if isinstance(split, IterableDataset):
        return split.take(n)
    return split.select(range(min(n, len(split))))
