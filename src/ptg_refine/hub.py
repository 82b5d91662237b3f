"""Finding a refiner's files: alias, local folder or Hugging Face Hub repo, with translated errors."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import (
    HubError,
    HubFileMissingError,
    HubOfflineError,
    HubRepoNotFoundError,
    WeightsNotPublishedError,
)
from .pretrained import get_pretrained, list_pretrained

__all__ = ["download", "resolve_files"]

_CONFIG = "config.json"
_WEIGHTS = "model.safetensors"


def resolve_files(
    name_or_path: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    force_download: bool = False,
) -> tuple[Path, Path]:
    """Return local paths of ``config.json`` and ``model.safetensors`` for a refiner.

    ``name_or_path`` is an alias from :mod:`ptg_refine.pretrained`, a local folder written by
    ``save_pretrained``, or a Hub repo id ``"org/name"`` (downloaded into, or read from, the Hub cache).

    Raises:
        WeightsNotPublishedError: a known alias whose weights are not released.
        HubOfflineError: offline (or ``local_files_only``) and the files are not cached.
        HubRepoNotFoundError: no such repo or revision (or private without a token).
        HubFileMissingError: the folder or repo lacks config.json or model.safetensors.
    """
    entry = get_pretrained(name_or_path)
    if entry is not None:
        if not entry.published:
            raise WeightsNotPublishedError(
                f"The pretrained refiner {entry.alias!r} (Hub repo {entry.repo_id}, base "
                f"{entry.base_model}, encoder {entry.encoder}) is not published yet. {entry.notes} "
                "Or load a refiner you trained: PTGRefiner.from_pretrained('path/to/folder')."
            )
        name_or_path = entry.repo_id
        revision = revision or entry.revision

    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return _local_files(local)
    if local.exists():
        raise HubFileMissingError(
            f"{local} is a file; from_pretrained expects a folder written by save_pretrained() "
            f"(holding {_CONFIG} and {_WEIGHTS}), a Hub repo id 'org/name', or one of the aliases "
            f"{list_pretrained()}."
        )
    _check_repo_id(name_or_path)
    kwargs = dict(
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
        force_download=force_download,
    )
    config = _download(name_or_path, _CONFIG, **kwargs)
    weights = _download(name_or_path, _WEIGHTS, **kwargs)
    return config, weights


def download(name: str, **kwargs: object) -> Path:
    """Fetch a refiner into the Hub cache and return its snapshot folder (``ptg-refine download``)."""
    config, _ = resolve_files(name, **kwargs)  # type: ignore[arg-type]
    return config.parent


def _local_files(folder: Path) -> tuple[Path, Path]:
    config, weights = folder / _CONFIG, folder / _WEIGHTS
    missing = [p.name for p in (config, weights) if not p.is_file()]
    if missing:
        present = sorted(p.name for p in folder.iterdir())[:20]
        hint = ""
        if any(n.endswith((".bin", ".pt", ".pth", ".ckpt")) for n in present):
            hint = (
                " Weights are only read from safetensors; convert a training checkpoint with "
                "`ptg-refine train --resume` output or refiner.save_pretrained(folder)."
            )
        raise HubFileMissingError(
            f"Folder {folder} lacks {', '.join(missing)} (it holds {present}). A refiner folder is "
            f"written by PTGRefiner.save_pretrained(folder).{hint}"
        )
    return config, weights


def _check_repo_id(name: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    problem = None
    if name.count("/") != 1:
        problem = "it is not an existing folder and not of the form 'org/name'"
    else:
        try:
            validate_repo_id(name)
        except HFValidationError as err:
            problem = str(err)
    if problem:
        raise HubRepoNotFoundError(
            f"Cannot load refiner {name!r}: {problem}. Pass a known alias {list_pretrained()}, a "
            "Hub repo id such as 'org/name', or a folder written by save_pretrained()."
        )


def _download(repo_id: str, filename: str, **kwargs: object) -> Path:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    revision = kwargs.get("revision") or "main"
    where = f"{repo_id}@{revision}"
    try:
        return Path(hf_hub_download(repo_id, filename, **kwargs))  # type: ignore[arg-type]
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        offline = constants.HF_HUB_OFFLINE or kwargs.get("local_files_only")
        why = (
            "offline mode is on (HF_HUB_OFFLINE or local_files_only=True)"
            if offline
            else ("the Hub could not be reached")
        )
        raise HubOfflineError(
            f"Cannot load {filename} of {where}: {why} and it is not in the local Hub cache "
            f"({kwargs.get('cache_dir') or constants.HF_HUB_CACHE}). Connect and run "
            f"`ptg-refine download {repo_id}` once, pass cache_dir= pointing at a cache that has it, "
            "or load a local folder written by save_pretrained()."
        ) from err
    except RevisionNotFoundError as err:
        raise HubRepoNotFoundError(
            f"Repo {repo_id} has no revision {revision!r}. Check the branch, tag or commit name."
        ) from err
    except RepositoryNotFoundError as err:
        raise HubRepoNotFoundError(
            f"Hub repo {repo_id!r} was not found (or it is private or gated and no valid token was "
            "given). Check the name, or pass token= / run `hf auth login`."
        ) from err
    except EntryNotFoundError as err:
        raise HubFileMissingError(
            f"Hub repo {where} has no {filename}. A ptg_refine refiner repo holds {_CONFIG} and "
            f"{_WEIGHTS} (PTGRefiner.push_to_hub writes both)."
        ) from err
    except HfHubHTTPError as err:
        raise HubError(f"Hub request for {filename} of {where} failed: {err}") from err
