"""Fixtures shared by the test modules (opted into with ``pytest.mark.usefixtures``)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: as fast on small tensors, no thrashing on a loaded 2-core machine,
    and deterministic across processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def offline(monkeypatch):
    """The Hugging Face Hub in offline mode: nothing may touch the network."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
