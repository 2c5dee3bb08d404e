"""On-disk cache of region maps, so SAM runs once per slice across runs and commands.

Key: sha256 of the slice as the partitioner sees it (windowed to uint8, see
`to_uint8`), plus the partitioner's name and settings. Keying on the uint8 slice makes
the key independent of the caller's intensity normalisation (HU or task-normalised
[0, 1] give the same window), so `rat regions`, `train`, `evaluate` and inference share
entries. Each entry is one compressed .npz, written to a temp file and renamed.

The cache is an optimisation, never a reason to fail: a cache folder that cannot be
written (read-only, a path that is a file, disk full) turns the cache off with a
one-line `warning`, which `CachedPartitioner.fallback` passes on to the caller (the
CLI prints it once). RAT_NO_CACHE=1 (or `enabled=False`) turns it off outright.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ratcli.errors import OutputExistsError, OutputNotWritableError
from ratcli.io.atomic import TEMP_PREFIX, atomic_output
from ratcli.regions.base import Partitioner, check_slice

__all__ = ["RegionCache", "CachedPartitioner",
           "NO_CACHE_ENV"]

KEY_VERSION = b"rat-regions/1"
NO_CACHE_ENV = "RAT_NO_CACHE"


def cache_enabled() -> bool:
    """False when RAT_NO_CACHE is set to anything but "", "0", "false" or "no"."""
    return os.environ.get(NO_CACHE_ENV, "").strip().lower() in ("", "0", "false", "no")


def default_cache_dir() -> Path:
    """RAT_CACHE, else `RAT_HOME/cache/regions`, else the platform's user cache dir."""
    if cache := os.environ.get("RAT_CACHE"):
        return Path(cache).expanduser()
    if home := os.environ.get("RAT_HOME"):
        return Path(home).expanduser() / "cache" / "regions"
    import platformdirs

    return Path(platformdirs.user_cache_dir("rat")) / "regions"


class RegionCache:
    """Label maps stored as `<dir>/<key[:2]>/<key>.npz`.

    directory: default RAT_CACHE, RAT_HOME/cache/regions or the user cache dir.
    enabled: False: get() always misses and put() stores nothing; None: on unless
        RAT_NO_CACHE is set. An unusable folder is found here, with a test write, and
        turns the cache off; `warning` then holds one line saying so (else None).
    """

    def __init__(self, directory: str | Path | None = None, *,
                 enabled: bool | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.enabled = cache_enabled() if enabled is None else enabled
        self.warning: str | None = None
        if self.enabled:
            self._probe()

    @staticmethod
    def key(u8: np.ndarray, name: str, settings: dict) -> str:
        """Hex sha256 of (version, partitioner name, settings, shape, pixels).

        u8: (H, W) or (H, W, 3) uint8, the slice as the partitioner sees it.
        """
        h = hashlib.sha256(KEY_VERSION)
        h.update(json.dumps([name, settings, list(u8.shape)], sort_keys=True).encode())
        h.update(np.ascontiguousarray(u8).tobytes())
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.npz"

    def get(self, key: str) -> np.ndarray | None:
        """The stored (H, W) int32 labels, or None (absent or unreadable: recomputed)."""
        if not self.enabled:
            return None
        path = self.path(key)
        try:
            with np.load(path, allow_pickle=False) as f:
                return f["labels"].astype(np.int32, copy=False)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return None

    def put(self, key: str, labels: np.ndarray) -> None:
        """Store labels; a failed write turns the cache off (see `warning`), never raises."""
        if not self.enabled:
            return
        try:
            # overwrite: another process may have stored the same entry meanwhile
            with atomic_output(self.path(key), overwrite=True) as tmp, open(tmp, "wb") as f:
                np.savez_compressed(f, labels=labels.astype(np.int32, copy=False))
        except (OSError, OutputNotWritableError, OutputExistsError) as exc:
            self._disable(exc)

    def _probe(self) -> None:
        """Create the folder and write (then delete) a file in it, or turn the cache off."""
        if self.directory.exists() and not self.directory.is_dir():
            self._disable(NotADirectoryError(0, "it is a file, not a folder"))
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=TEMP_PREFIX + "probe-"):
                pass
        except OSError as exc:
            self._disable(exc)

    def _disable(self, exc: Exception) -> None:
        self.enabled = False
        if self.warning is None:
            why = getattr(exc, "strerror", None) or str(exc).split(": ", 1)[-1]
            self.warning = (f"{self.directory}: region cache folder is not usable ({why}); "
                            f"going on without caching (set RAT_CACHE to a writable folder, "
                            f"or {NO_CACHE_ENV}=1)")


class CachedPartitioner(Partitioner):
    """Wraps a partitioner whose first step is its `view` (to_uint8 for sam and
    classical, a CT window for litemedsam) with a cache.

    `hits` and `misses` count slices, for reports and tests.
    """

    def __init__(self, inner: Partitioner, cache: RegionCache) -> None:
        self.inner = inner
        self.cache = cache
        self.name = inner.name
        self.hits = 0
        self.misses = 0

    @property
    def fallback(self) -> str | None:  # type: ignore[override]
        """The inner partitioner's fallback note and the cache's warning, as one line."""
        notes = [n for n in (self.inner.fallback, self.cache.warning) if n]
        return "; ".join(notes) or None

    @fallback.setter
    def fallback(self, value: str | None) -> None:
        self.inner.fallback = value

    @property
    def settings(self) -> dict:
        return self.inner.settings

    def __call__(self, slice2d: np.ndarray) -> np.ndarray:
        return self.partition_volume(slice2d[None])[0]

    def partition_volume(self, volume: np.ndarray) -> np.ndarray:
        """(Z, H, W) or (Z, H, W, 3) -> (Z, H, W) int32; only missing slices are
        computed, in one `inner.partition_volume` call (so SAM still batches them).

        A partitioner that gives slices the map of an earlier, similar slice
        (`reuses_maps`, LiteMedSAM) keeps deciding that itself, on every slice: the
        cache then holds and serves only the own maps of the slices it runs the model
        on, so which slices reuse which map never depends on what the cache holds.
        `hits` and `misses` then count those slices.
        """
        for s in volume:
            check_slice(s)
        u8 = np.stack([self.inner.view(s) for s in volume])
        if getattr(self.inner, "reuses_maps", False):
            return self.inner.partition_volume(u8, own_maps=self._own_maps)
        settings = self.inner.settings
        keys = [self.cache.key(s, self.name, settings) for s in u8]
        out = np.empty(volume.shape[:3], dtype=np.int32)
        missing = []
        for z, key in enumerate(keys):
            labels = self.cache.get(key)
            if labels is None or labels.shape != out.shape[1:]:
                missing.append(z)
            else:
                out[z] = labels
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            # the inner partitioner's first step is its view, so giving it u8 is exact
            fresh = self.inner.partition_volume(u8[missing])
            for z, labels in zip(missing, fresh, strict=True):
                self.cache.put(keys[z], labels)
                out[z] = labels
        return out

    def _own_maps(self, views: list[np.ndarray]) -> list[np.ndarray]:
        """Own maps of 8-bit views from the cache, the missing ones from
        `inner.own_maps` in one call (and stored)."""
        settings = self.inner.settings
        keys = [self.cache.key(v, self.name, settings) for v in views]
        out: list[np.ndarray | None] = [self.cache.get(k) for k in keys]
        missing = [i for i, (v, m) in enumerate(zip(views, out, strict=True))
                   if m is None or m.shape != v.shape[:2]]
        self.hits += len(views) - len(missing)
        self.misses += len(missing)
        if missing:
            fresh = self.inner.own_maps([views[i] for i in missing])
            for i, labels in zip(missing, fresh, strict=True):
                self.cache.put(keys[i], labels)
                out[i] = labels
        return out  # type: ignore[return-value]

    def view(self, slice2d: np.ndarray) -> np.ndarray:
        return self.inner.view(slice2d)

    def for_task(self, task) -> Partitioner:
        inner = self.inner.for_task(task)
        if inner is self.inner:
            return self
        memo = self.__dict__.setdefault("_tasks", {})  # one wrapper per task
        if id(inner) not in memo:
            memo[id(inner)] = CachedPartitioner(inner, self.cache)
            memo[id(inner)].method = self.method
        return memo[id(inner)]

    def __getattr__(self, attr: str):
        # expose the wrapped partitioner's own attributes (checkpoint, device, ...)
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)
