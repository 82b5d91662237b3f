"""Saving, strict loading, the Hub cache, offline mode and aliases."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ptg_refine import PTGRefiner
from ptg_refine.errors import (
    CheckpointError,
    ConfigError,
    HubFileMissingError,
    HubOfflineError,
    HubRepoNotFoundError,
    PTGError,
    WeightsNotPublishedError,
)
from ptg_refine.pretrained import PRETRAINED, list_pretrained

TINY = dict(embed_dim=8, width=8, num_blocks=1, prior_hidden=16)


@pytest.fixture
def trained(tmp_path) -> tuple[PTGRefiner, Path]:
    torch.manual_seed(0)
    refiner = PTGRefiner(**TINY, in_channels=1)
    with torch.no_grad():
        for p in refiner.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    folder = tmp_path / "refiner"
    refiner.save_pretrained(folder)
    return refiner, folder


def _inputs(c=1):
    torch.manual_seed(1)
    return torch.rand(2, c, 21, 19), torch.rand(2, c, 21, 19), torch.randn(2, 8)


def test_save_writes_safetensors_config_and_card(trained):
    refiner, folder = trained
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg == refiner.config.to_dict()
    card = (folder / "README.md").read_text()
    assert "ptg_refine" in card and f"{refiner.num_parameters:,}" in card


def test_roundtrip_is_exact(trained):
    refiner, folder = trained
    loaded = PTGRefiner.from_pretrained(folder)
    assert loaded.config == refiner.config
    for (k, a), (_, b) in zip(refiner.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    refiner.eval()
    x, d, g = _inputs()
    assert torch.equal(refiner(x, d, g), loaded(x, d, g))


def test_encoder_spec_survives_roundtrip(tmp_path):
    refiner = PTGRefiner(encoder="stats", width=8, num_blocks=1)
    refiner.save_pretrained(tmp_path)
    loaded = PTGRefiner.from_pretrained(tmp_path)
    assert loaded.config.encoder == "stats"
    assert loaded.config.encoder_config == refiner.config.encoder_config


def test_missing_and_unexpected_keys_raise(trained):
    _, folder = trained
    state = load_file(folder / "model.safetensors")
    state.pop("head.bias")
    state["extra.weight"] = torch.zeros(3)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"missing keys \[head.bias\].*unexpected keys \[extra.weight\]"
    ):
        PTGRefiner.from_pretrained(folder)


def test_wrong_shapes_raise(trained, tmp_path):
    _, folder = trained
    other = PTGRefiner(**{**TINY, "width": 4}, in_channels=1)
    other.save_pretrained(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="wrong shapes"):
        PTGRefiner.from_pretrained(folder)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_raises(trained, damage):
    _, folder = trained
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": b"\x00garbage" * 10, "empty": b""}[damage]
    )
    with pytest.raises(CheckpointError, match="corrupt"):
        PTGRefiner.from_pretrained(folder)


def test_nan_weights_raise(trained):
    _, folder = trained
    state = load_file(folder / "model.safetensors")
    state["head.bias"][0] = float("nan")
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="NaN"):
        PTGRefiner.from_pretrained(folder)


def test_bad_config_raises(trained):
    _, folder = trained
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="Cannot read refiner config"):
        PTGRefiner.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"embed_dim": 8, "in_channels": 0}))
    with pytest.raises(ConfigError, match="in_channels"):
        PTGRefiner.from_pretrained(folder)


def test_missing_files_in_folder(trained):
    _, folder = trained
    (folder / "model.safetensors").unlink()
    with pytest.raises(HubFileMissingError, match="model.safetensors"):
        PTGRefiner.from_pretrained(folder)


def _populate_cache(cache: Path, repo_id: str, src: Path, sha: str = "0" * 40) -> None:
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo_dir / "snapshots" / sha
    snap.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(src / name, snap / name)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(sha)


def test_load_from_prepopulated_hub_cache(trained, tmp_path):
    refiner, folder = trained
    cache = tmp_path / "hub-cache"
    _populate_cache(cache, "someone/ptg-rm-test", folder)
    loaded = PTGRefiner.from_pretrained(
        "someone/ptg-rm-test", cache_dir=cache, local_files_only=True
    )
    x, d, g = _inputs()
    assert torch.equal(refiner.eval()(x, d, g), loaded(x, d, g))


def test_offline_and_not_cached(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubOfflineError, match="offline") as info:
        PTGRefiner.from_pretrained("someone/not-cached", cache_dir=tmp_path)
    assert "ptg-refine download" in str(info.value)
    assert isinstance(info.value, OSError)


def test_local_files_only_not_cached(tmp_path):
    with pytest.raises(HubOfflineError, match="not in the local Hub cache"):
        PTGRefiner.from_pretrained("someone/not-cached", cache_dir=tmp_path, local_files_only=True)


def test_cached_repo_missing_weights(trained, tmp_path):
    _, folder = trained
    cache = tmp_path / "hub-cache"
    _populate_cache(cache, "someone/partial", folder)
    next((cache / "models--someone--partial" / "snapshots").iterdir()).joinpath(
        "model.safetensors"
    ).unlink()
    with pytest.raises(HubOfflineError, match="model.safetensors"):
        PTGRefiner.from_pretrained("someone/partial", cache_dir=cache, local_files_only=True)


class _FakeResponse:
    """Enough of an HTTP response for huggingface_hub's error classes (any HTTP client version)."""

    headers: dict = {}
    request = None
    status_code = 404


def test_repo_not_found_translated(monkeypatch):
    from huggingface_hub.errors import RepositoryNotFoundError

    import ptg_refine.hub

    def fake_download(*args, **kwargs):
        raise RepositoryNotFoundError("404", response=_FakeResponse())

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    with pytest.raises(HubRepoNotFoundError, match="not found"):
        ptg_refine.hub.resolve_files("someone/missing")


def test_remote_file_missing_translated(monkeypatch):
    from huggingface_hub.errors import RemoteEntryNotFoundError

    def fake_download(*args, **kwargs):
        raise RemoteEntryNotFoundError("404", response=_FakeResponse())

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    with pytest.raises(HubFileMissingError, match="has no config.json"):
        PTGRefiner.from_pretrained("someone/empty-repo")


@pytest.mark.parametrize("name", ["not a repo", "a/b/c", "./does-not-exist"])
def test_invalid_names(name):
    with pytest.raises(HubRepoNotFoundError, match="alias"):
        PTGRefiner.from_pretrained(name)


def test_file_instead_of_folder(trained):
    _, folder = trained
    with pytest.raises(HubFileMissingError, match="is a file"):
        PTGRefiner.from_pretrained(folder / "model.safetensors")


@pytest.mark.parametrize("alias", list_pretrained())
def test_unpublished_aliases_say_so(alias, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    entry = PRETRAINED[alias]
    assert entry.task in {"derain", "denoise", "lowlight", "deblur"}
    assert entry.repo_id.count("/") == 1 and entry.license and entry.base_model and entry.encoder
    assert not entry.published
    with pytest.raises(WeightsNotPublishedError, match="not published") as info:
        PTGRefiner.from_pretrained(alias)
    assert "ptg-refine train" in str(info.value)
    assert isinstance(info.value, PTGError)


def test_aliases_cover_the_four_tasks():
    assert set(list_pretrained()) >= {"derain", "denoise", "lowlight", "deblur"}


def test_unexpected_kwargs_rejected(trained):
    _, folder = trained
    with pytest.raises(ConfigError, match="Unexpected keyword"):
        PTGRefiner.from_pretrained(folder, width=4)


def test_push_to_hub_uploads_saved_folder(trained, monkeypatch):
    refiner, _ = trained
    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            class R:
                pass

            r = R()
            r.repo_id = repo_id
            return r

        def upload_folder(self, repo_id, folder_path, **kwargs):
            uploaded["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            uploaded["card"] = (Path(folder_path) / "README.md").read_text()
            return "https://example.invalid/commit/1"

    monkeypatch.setattr("huggingface_hub.hub_mixin.HfApi", FakeApi)
    refiner.push_to_hub("me/ptg-rm-test")
    assert uploaded["files"] == ["README.md", "config.json", "model.safetensors"]
    assert "ptg_refine" in uploaded["card"]
