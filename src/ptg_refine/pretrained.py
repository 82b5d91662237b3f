"""The one table of named pretrained refiners (aliases for ``PTGRefiner.from_pretrained``).

An entry says where its weights live on the Hugging Face Hub, which encoder produced the prior they
were trained with, which base network they were trained on top of, and under which licence. Entries
whose weights are not published yet say so (``published=False``): asking for them raises
:class:`~ptg_refine.errors.WeightsNotPublishedError` explaining how to train your own, instead of
failing somewhere inside the download.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PRETRAINED", "PretrainedEntry", "get_pretrained", "list_pretrained"]


@dataclass(frozen=True)
class PretrainedEntry:
    """One named refiner."""

    alias: str
    task: str
    repo_id: str
    revision: str
    encoder: str
    base_model: str
    license: str
    published: bool
    notes: str = ""


_NOT_YET = (
    "Weights not published yet: no refiner trained with this prior has been released. "
    "Train your own with `ptg-refine train` (see docs/training.md)."
)

PRETRAINED: dict[str, PretrainedEntry] = {
    e.alias: e
    for e in (
        PretrainedEntry(
            alias="derain",
            task="derain",
            repo_id="ptg-refine/ptg-rm-derain-restormer-clip",
            revision="main",
            encoder="open_clip:ViT-B-32@openai",
            base_model="Restormer (deraining, Rain13K)",
            license="apache-2.0",
            published=False,
            notes=_NOT_YET,
        ),
        PretrainedEntry(
            alias="denoise",
            task="denoise",
            repo_id="ptg-refine/ptg-rm-denoise-drunet-clip",
            revision="main",
            encoder="open_clip:ViT-B-32@openai",
            base_model="DRUNet (gray Gaussian denoising, sigma 25)",
            license="apache-2.0",
            published=False,
            notes=_NOT_YET,
        ),
        PretrainedEntry(
            alias="lowlight",
            task="lowlight",
            repo_id="ptg-refine/ptg-rm-lowlight-zerodce-clip",
            revision="main",
            encoder="open_clip:ViT-B-32@openai",
            base_model="Zero-DCE (unsupervised low-light enhancement)",
            license="apache-2.0",
            published=False,
            notes=_NOT_YET,
        ),
        PretrainedEntry(
            alias="deblur",
            task="deblur",
            repo_id="ptg-refine/ptg-rm-deblur-restormer-clip",
            revision="main",
            encoder="open_clip:ViT-B-32@openai",
            base_model="Restormer (motion deblurring, GoPro)",
            license="apache-2.0",
            published=False,
            notes=_NOT_YET,
        ),
    )
}


def list_pretrained() -> list[str]:
    """Names of the known aliases (published or not)."""
    return sorted(PRETRAINED)


def get_pretrained(alias: str) -> PretrainedEntry | None:
    """The entry for ``alias``, or None when ``alias`` is not a known name."""
    return PRETRAINED.get(alias)
