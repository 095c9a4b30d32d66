"""Uploading a built dataset folder to the Hugging Face Hub, exactly the files ``load_dataset(folder)`` reads."""

from __future__ import annotations

import os
from pathlib import Path


def hub_upload_files(folder: str | os.PathLike) -> list[str]:
    """The files ``push_dataset_folder`` uploads: the card and the parquet shards, relative paths."""
    folder = Path(folder)
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [f for f in files if f == "README.md" or (f.startswith("data/") and f.endswith(".parquet"))]


class HubPushError(OSError):
    pass


def push_dataset_folder(
    folder: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None
) -> str:
    """Upload a built folder to the Hub as-is (same bytes that ``load_dataset(folder)`` reads)."""
    import huggingface_hub
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError

    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise HubPushError(
            f"cannot push {folder} to {repo_id}: HF_HUB_OFFLINE is set. The local dataset is intact; "
            f"push later with: stk-vqa build ... --push_to_hub or huggingface-cli upload {repo_id} {folder} --repo-type dataset"
        )
    token = token or huggingface_hub.get_token()
    if not token:
        raise HubPushError(
            f"cannot push {folder} to {repo_id}: no Hugging Face token (run `hf auth login` or set HF_TOKEN). "
            "The local dataset is intact."
        )
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="dataset",
            allow_patterns=hub_upload_files(folder),
            commit_message="Upload stk-vqa dataset",
        )
    except (HfHubHTTPError, OSError) as err:
        raise HubPushError(f"pushing {folder} to {repo_id} failed: {err}. The local dataset is intact.") from err
    url = f"https://huggingface.co/datasets/{repo_id}"
    print(f"pushed {folder} to {url}")
    return url
