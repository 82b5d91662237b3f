"""Cache of off-the-shelf features (OSF) for training with a frozen encoder.

The encoder G that gives PTG-RM its prior is frozen, so the feature vector of a given degraded image
never changes during training. :class:`FeatureCache` stores it (on the CPU) the first time it is
computed and returns it on later epochs instead of running G again.

An entry is keyed by the data item's ``"key"`` when the item has one (it must identify the *exact*
degraded crop: file, crop position, flips, noise seed, ...), else by a content hash (BLAKE2b) of the
degraded tensor's bytes. Data sets that draw a new random crop or noise every epoch therefore never
hit the cache: use ``fit(..., cache_features=False)`` for them, or give them fixed crops.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch

from ..errors import ConfigError

__all__ = ["FeatureCache", "content_key", "normalize_key"]


def content_key(image: torch.Tensor) -> tuple[str, str]:
    """A key identifying ``image`` by content: BLAKE2b of its bytes, shape and dtype.

    The tensor is copied to the CPU if needed (hash data-loader outputs before moving them).
    """
    x = image.detach()
    if x.device.type != "cpu":
        x = x.cpu()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{tuple(x.shape)}|{x.dtype}|".encode())
    h.update(x.contiguous().view(torch.uint8).numpy().tobytes() if x.numel() else b"")
    return ("hash", h.hexdigest())


def normalize_key(key: Any) -> Hashable:
    """Turn an item's ``"key"`` into a hashable cache key (tensors and lists become tuples)."""
    if isinstance(key, torch.Tensor):
        key = key.item() if key.numel() == 1 else tuple(key.flatten().tolist())
    elif isinstance(key, list | tuple):
        key = tuple(normalize_key(k) for k in key)
    elif isinstance(key, dict):
        key = tuple(sorted((str(k), normalize_key(v)) for k, v in key.items()))
    try:
        hash(key)
    except TypeError as err:
        raise ConfigError(
            f"A data item's 'key' must be hashable (str, int, tuple), got {type(key).__name__}."
        ) from err
    return ("key", key)


class FeatureCache:
    """LRU cache of encoder features, stored on the CPU.

    Args:
        max_entries: the most feature vectors kept; the least recently used is dropped beyond it
            (a 512-float vector takes 2 KiB, so 100,000 entries take about 200 MiB).

    Attributes:
        hits: look-ups answered from the cache.
        misses: look-ups that ran the encoder.
        evictions: entries dropped to stay within ``max_entries``.

    Example:
        >>> import torch
        >>> cache = FeatureCache(max_entries=10)
        >>> encoder = lambda x: x.mean(dim=(2, 3))  # any (B, C, H, W) -> (B, D)
        >>> x = torch.rand(2, 3, 8, 8)
        >>> a = cache.features(encoder, x, keys=["a", "b"])
        >>> b = cache.features(encoder, x, keys=["a", "b"])
        >>> torch.equal(a, b), cache.hits, cache.misses
        (True, 2, 2)
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigError(f"max_entries must be a positive int, got {max_entries!r}.")
        self.max_entries = max_entries
        self._store: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._store

    def get(self, key: Hashable) -> torch.Tensor | None:
        """The stored (D,) features for ``key`` (marked as recently used), or None. Not counted."""
        value = self._store.get(key)
        if value is not None:
            self._store.move_to_end(key)
        return value

    def put(self, key: Hashable, features: torch.Tensor) -> torch.Tensor:
        """Store a (D,) feature vector (a CPU copy) under ``key``; returns the stored copy."""
        value = features.detach().to("cpu", copy=True)
        self._store[key] = value
        self._store.move_to_end(key)
        while len(self._store) > self.max_entries:
            self._store.popitem(last=False)
            self.evictions += 1
        return value

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        self._store.clear()
        self.hits = self.misses = self.evictions = 0

    def keys_for(self, images: torch.Tensor, keys: Sequence[Any] | None = None) -> list[Hashable]:
        """Cache keys of a batch: the items' keys where given (not None), else content hashes."""
        n = images.shape[0]
        if keys is not None and len(keys) != n:
            raise ConfigError(f"Got {len(keys)} keys for a batch of {n} images.")
        out: list[Hashable] = []
        for i in range(n):
            k = None if keys is None else keys[i]
            if k is None:
                out.append(content_key(images[i]))
            elif isinstance(k, tuple) and len(k) == 2 and k[0] in ("key", "hash"):
                out.append(k)  # already a cache key
            else:
                out.append(normalize_key(k))
        return out

    def features(
        self,
        encoder: Callable[[torch.Tensor], torch.Tensor],
        images: torch.Tensor,
        keys: Sequence[Any] | None = None,
    ) -> torch.Tensor:
        """Features (B, D) of a batch, running ``encoder`` (under no_grad) on the misses only.

        Args:
            encoder: maps images (N, C, H, W) to features (N, D).
            images: the degraded batch (B, C, H, W).
            keys: per-image keys (an item's ``"key"``, a key from :meth:`keys_for`, or None to
                hash the image's content). None hashes every image.

        Returns:
            (B, D) features on ``images``' device, in the dtype the encoder returned.
        """
        cache_keys = self.keys_for(images, keys)
        found: list[torch.Tensor | None] = [self.get(k) for k in cache_keys]
        first: dict[Hashable, int] = {}  # missing key -> first position in the batch
        for i, f in enumerate(found):
            if f is None:
                first.setdefault(cache_keys[i], i)
        self.misses += len(first)
        self.hits += len(cache_keys) - len(first)
        if first:
            rows = list(first.values())
            with torch.no_grad():
                batch = images if len(rows) == len(cache_keys) else images[rows]
                computed = encoder(batch)
            stored = {k: self.put(k, computed[j]) for j, k in enumerate(first)}
            found = [stored[k] if f is None else f for k, f in zip(cache_keys, found)]
        return torch.stack(found).to(images.device)  # type: ignore[arg-type]

    def stats(self) -> dict[str, float | int]:
        """``{"hits", "misses", "entries", "evictions", "hit_rate"}``."""
        total = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "entries": len(self._store),
            "evictions": self.evictions,
            "hit_rate": self.hits / total if total else 0.0,
        }

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"FeatureCache(entries={s['entries']}/{self.max_entries}, hits={s['hits']}, "
            f"misses={s['misses']})"
        )
