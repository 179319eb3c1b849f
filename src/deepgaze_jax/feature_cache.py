"""The feature cache: frozen backbone grids, computed once per image and kept on disk.

The backbone is frozen, so training the readout only ever needs each image's
feature grid (`model.feature_grid`: (h / 16, w / 16, C), e.g. 24 x 32 x 432 for a
384 x 512 working image and EfficientNet-Lite0). They are computed once, in
batches, with the backbone jitted once per working shape, and stored as one
``.npy`` file per image (float16 by default, bfloat16 on request), plus a JSON index.

Every entry is keyed by a SHA-256 of the image's bytes and shape and of the
*context*: backbone name, a fingerprint of its weights, a fingerprint of the code
that computes grids (`code_fingerprint`), the taps, the working long side and
`PREPROCESSING_VERSION` (bump it when anything else about grids changes). A changed
image, backbone, weight file, backbone code or tap list therefore gets a new key
and only those grids are rebuilt; stale files are left for `prune` to remove.
Files and the index are written atomically (temporary file + rename), the index every
`INDEX_WRITE_INTERVAL_S` during a build and at its end, so a build killed midway resumes
from its last index write. The index also holds the SHA-256 of every
grid file; a file that no longer matches it (damaged, overwritten) is logged and
recomputed. Grids are read into memory once, verified, and returned as read-only
arrays (no memory maps: those are paged in again on every pass over the data).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from tqdm.auto import tqdm

from deepgaze_jax.atomic_file import write_bytes_atomic, write_atomic
from deepgaze_jax.backbones import _ops
from deepgaze_jax.model import ModelConfig, feature_grid
from deepgaze_jax.xla_options import jit

logger = logging.getLogger(__name__)

PREPROCESSING_VERSION = 1
INDEX_NAME = "index.json"
INDEX_WRITE_INTERVAL_S = 10.0
"""While grids are being built, the index is rewritten at most this often (and once at the end): it lists every
grid ever cached in the directory (thousands), so rewriting it after every batch cost 7 s of a 72 s build of
MIT1003's grids. Grids written since the last index write are computed again if the build is interrupted."""
INDEX_FORMAT = "deepgaze-jax-feature-cache-v1"
STORAGE_DTYPES = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16)}


class FeatureCacheError(RuntimeError):
    """A cache directory that cannot be used (unreadable index, wrong format)."""


def weights_fingerprint(weights: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) over the names, dtypes, shapes and bytes of a backbone's weights."""
    h = hashlib.sha256()
    for name in sorted(weights):
        arr = np.ascontiguousarray(np.asarray(weights[name]))
        h.update(f"{name}:{arr.dtype}:{arr.shape};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def code_fingerprint(config: ModelConfig) -> str:
    """SHA-256 (hex) of the source of `model.feature_grid`, the backbone's module (`Backbone.module`) and its shared layers.

    Any edit there (even a cosmetic one) invalidates cached grids: rebuilding costs minutes,
    training on grids from older code could silently cost correctness.
    """
    backbone_module = importlib.import_module(config.get_backbone().module)
    h = hashlib.sha256(inspect.getsource(feature_grid).encode())
    for module in (backbone_module, _ops):
        h.update(inspect.getsource(module).encode())
    return h.hexdigest()


def cache_context(config: ModelConfig, fingerprint: str, dtype: str) -> dict:
    """Everything besides the image that determines a cached grid."""
    return {
        "backbone": config.backbone,
        "weights_sha256": fingerprint,
        "code_sha256": code_fingerprint(config),
        "taps": list(config.resolved_taps()),
        "long_side": config.long_side,
        "preprocessing_version": PREPROCESSING_VERSION,
        "dtype": dtype,
    }


def entry_key(image: np.ndarray, context: dict) -> str:
    """SHA-256 (hex) of an (h, w, 3) uint8 working image and the cache context."""
    h = hashlib.sha256(json.dumps(context, sort_keys=True).encode())
    h.update(f"{image.dtype}{image.shape}".encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def _read_index(directory: Path) -> dict:
    path = directory / INDEX_NAME
    if not path.exists():
        return {"format": INDEX_FORMAT, "entries": {}}
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FeatureCacheError(f"cannot read the feature cache index {path}: {exc}; delete it to rebuild") from exc
    if index.get("format") != INDEX_FORMAT:
        raise FeatureCacheError(f"{path} is not a {INDEX_FORMAT} index (format={index.get('format')!r})")
    return index


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _load_entry(directory: Path, key: str, entry: dict) -> np.ndarray | None:
    """The cached grid (read-only, in memory), or None if its file is missing, damaged or does not match."""
    path = directory / f"{key}.npy"
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if hashlib.sha256(raw).hexdigest() != entry.get("sha256"):
        logger.warning("feature cache file %s does not match its digest in the index; recomputing it", path)
        return None
    buffer = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(buffer)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, stored = reader(buffer)
    except ValueError:
        return None
    dtype = STORAGE_DTYPES[entry["dtype"]]
    if fortran_order or shape != tuple(entry["shape"]) or stored.itemsize != dtype.itemsize:
        return None
    return np.frombuffer(raw, dtype, offset=buffer.tell()).reshape(shape)


@functools.lru_cache(maxsize=8)
def _jitted_grid(config: ModelConfig, dtype: str):
    storage = jnp.dtype(STORAGE_DTYPES[dtype])
    return jit(lambda weights, images: feature_grid(config, weights, images).astype(storage))


def cached_feature_grids(
    images: Sequence[np.ndarray],
    config: ModelConfig,
    backbone_weights: Mapping[str, np.ndarray],
    directory: str | os.PathLike,
    dtype: str = "float16",
    batch_size: int = 8,
    progress: bool = True,
) -> list[np.ndarray]:
    """(h / s, w / s, C) feature grid of every working image, from the cache or computed and stored.

    Args:
      images: (h, w, 3) uint8 working images (h, w multiples of 32).
      config: fixes backbone, taps and long side.
      backbone_weights: the backbone's weights (fingerprinted into the keys).
      directory: the cache directory (created if needed).
      dtype: storage dtype, "float16" or "bfloat16".
      batch_size: images per backbone call (missing images are grouped by shape).
    Returns:
      per image, a read-only in-memory array of ``dtype``, verified against its digest.
    """
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    index = _read_index(directory)
    context = cache_context(config, weights_fingerprint(backbone_weights), dtype)
    keys = [entry_key(np.asarray(img), context) for img in images]

    grids: list[np.ndarray | None] = [
        _load_entry(directory, key, index["entries"][key]) if key in index["entries"] else None for key in keys
    ]
    missing: dict[tuple[int, ...], list[int]] = {}
    for i, grid in enumerate(grids):
        if grid is None:
            missing.setdefault(tuple(np.shape(images[i])), []).append(i)
    if missing:
        compute = _jitted_grid(config, dtype)
        weights = jax.tree_util.tree_map(jnp.asarray, dict(backbone_weights))
        bar = tqdm(total=sum(map(len, missing.values())), desc=f"features ({config.backbone})", unit="img",
                   disable=not progress)
        index_written = time.monotonic()
        for shape, members in missing.items():
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                batch = np.zeros((batch_size, *shape), np.uint8)  # fixed batch: one compilation per shape
                for j, i in enumerate(chunk):
                    batch[j] = images[i]
                out = np.asarray(compute(weights, jnp.asarray(batch)))
                for j, i in enumerate(chunk):
                    data = _npy_bytes(out[j].view(np.uint16))
                    write_bytes_atomic(directory / f"{keys[i]}.npy", data)
                    index["entries"][keys[i]] = {"shape": list(out.shape[1:]), "dtype": dtype, "context": context,
                                                 "sha256": hashlib.sha256(data).hexdigest()}
                    grids[i] = _load_entry(directory, keys[i], index["entries"][keys[i]])
                if time.monotonic() - index_written >= INDEX_WRITE_INTERVAL_S:
                    write_atomic(directory / INDEX_NAME, json.dumps(index))
                    index_written = time.monotonic()
                bar.update(len(chunk))
        write_atomic(directory / INDEX_NAME, json.dumps(index))
        bar.close()
    return grids  # type: ignore[return-value]


def prune(directory: str | os.PathLike, keep: Sequence[str]) -> int:
    """Deletes the cached grids whose keys are not in ``keep``; returns how many were removed."""
    directory = Path(directory)
    index = _read_index(directory)
    keep = set(keep)
    removed = [key for key in index["entries"] if key not in keep]
    for key in removed:
        (directory / f"{key}.npy").unlink(missing_ok=True)
        del index["entries"][key]
    write_atomic(directory / INDEX_NAME, json.dumps(index))
    return len(removed)
