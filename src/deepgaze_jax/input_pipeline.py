"""What the readout is trained on: cached grids grouped by shape, on a device mesh, and their statistics.

In the role of Flax's ``input_pipeline.py``: the training images of one working
shape form a `ShapeGroup` (grids, centre bias, fixation counts), padded to a
multiple of the device count with zero-count images and sharded over the mesh
axis ``"data"`` (`data_mesh`). `feature_stats` gives the readout's fixed
per-channel standardisation; `minibatches` the shuffled batches of Adam.
"""

from __future__ import annotations

import mmap
from typing import Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from deepgaze_jax.data.fixations import Fixations
from deepgaze_jax.likelihood import fixation_counts

DATA_AXIS = "data"


@flax.struct.dataclass
class ShapeGroup:
    """The training images of one working shape, as arrays on device.

    Attributes:
      grids: (N, h, w, C) feature grids (float16, bfloat16 or float32).
      log_centerbias: (N, H, W) float32 log centre-bias density on the density grid.
      counts: (N, H, W) float32 number of fixations in each cell (all zero for padding images).
      valid: (N,) bool, False for the images that only pad N to a multiple of the device count.
    """

    grids: jnp.ndarray
    log_centerbias: jnp.ndarray
    counts: jnp.ndarray
    valid: jnp.ndarray

    @property
    def num_images(self) -> int:
        return int(self.grids.shape[0])


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices) with axis ``"data"``."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def group_by_shape(grids: Sequence[np.ndarray], image_indices: Sequence[int]) -> list[list[int]]:
    """``image_indices`` split by grid shape (groups in sorted order of shape)."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i in image_indices:
        by_shape.setdefault(tuple(grids[i].shape), []).append(int(i))
    return [by_shape[shape] for shape in sorted(by_shape)]


def padded_size(n: int, cap: int) -> int:
    """The batch size ``n`` items are padded to: the next power of two (at least 1), at most ``cap``, so that
    only a few sizes compile.

    >>> [padded_size(n, 10) for n in (1, 3, 5, 9)]
    [1, 4, 8, 10]
    """
    return min(cap, 1 << max(n - 1, 0).bit_length())


def zeros_in_small_pages(shape: tuple[int, ...], dtype) -> np.ndarray:
    """A zeroed, writable ``shape`` array of ``dtype`` in fresh memory that the kernel backs with 4 KiB pages.

    NumPy asks the kernel for transparent huge pages for arrays of 4 MiB and more. Where the kernel then
    compacts memory on the first touch of such a page (``defrag`` ``madvise``, as on the machines this was
    measured on), filling a fresh 1.3 GB array of grids took 7.9-18.4 s in fresh processes, against 1.1-1.3 s
    in ordinary pages (``python -m benchmarks.huge_pages``, `docs/benchmarks.md`). Falls back to ``np.zeros``
    where the platform has no ``MADV_NOHUGEPAGE``.

    >>> a = zeros_in_small_pages((2, 3), np.float32)
    >>> a.shape, a.dtype.name, float(a.sum()), a.flags.writeable
    ((2, 3), 'float32', 0.0, True)
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    advice = getattr(mmap, "MADV_NOHUGEPAGE", None)
    if advice is None or nbytes == 0:
        return np.zeros(shape, dtype)
    memory = mmap.mmap(-1, nbytes)
    memory.madvise(advice)
    return np.frombuffer(memory, dtype).reshape(shape)


def stack_padded(arrays: Sequence[np.ndarray], members: Sequence[int], size: int, dtype, fill: int | None = None) -> np.ndarray:
    """(size, ...) ``arrays[members]`` stacked into one ``dtype`` array; rows past the members are
    zero, or copies of member ``fill`` when given."""
    out = zeros_in_small_pages((size, *np.shape(arrays[members[0]])), dtype)
    for j, i in enumerate(members):
        out[j] = arrays[i]
    if fill is not None:
        out[len(members):] = out[fill]
    return out


def make_groups(
    grids: Sequence[np.ndarray],
    log_centerbias: Sequence[np.ndarray],
    fixations: Fixations,
    image_indices: Sequence[int],
    cell: int,
    mesh: Mesh | None = None,
    dtype: np.dtype = np.float32,
) -> tuple[ShapeGroup, ...]:
    """Groups images ``image_indices`` by grid shape into padded `ShapeGroup`s sharded over ``mesh``.

    Args:
      grids: per image of the dataset, (h, w, C) features (a memory map is fine).
      log_centerbias: per image of the dataset, (H, W) log centre bias on its density grid.
      fixations: working-space fixations on the dataset's images.
      image_indices: the images to put in the groups.
      cell: density-grid cell size in working pixels.
      mesh: device mesh with axis ``"data"``; default `data_mesh()`.
      dtype: of the grids on device. float32 by default: on CPU a float16 grid costs a
        conversion in every loss evaluation (measured 2x slower per L-BFGS step).
    """
    mesh = data_mesh() if mesh is None else mesh
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    groups = []
    for members in group_by_shape(grids, image_indices):
        size = len(members) + (-len(members) % mesh.shape[DATA_AXIS])
        grid_arr = stack_padded(grids, members, size, dtype)
        cb_arr = stack_padded(log_centerbias, members, size, np.float32, fill=0)
        counts = np.zeros((size, *cb_arr.shape[1:]), np.float32)
        counts[: len(members)] = fixation_counts(fixations, members, cb_arr.shape[1:], cell)
        valid = np.arange(size) < len(members)
        groups.append(ShapeGroup(*(jax.device_put(a, sharding) for a in (grid_arr, cb_arr, counts, valid))))
    return tuple(groups)


def image_feature_sums(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(C,) float64 sum and sum of squares of an (h, w, C) grid's features over positions, and h * w."""
    x = np.asarray(grid, np.float64).reshape(-1, grid.shape[-1])
    return x.sum(0), np.square(x).sum(0), x.shape[0]


def feature_sums(grids: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`image_feature_sums` of every grid, stacked: (I, C), (I, C), (I,)."""
    sums, squares, counts = zip(*(image_feature_sums(g) for g in grids))
    return np.stack(sums), np.stack(squares), np.asarray(counts, np.float64)


def stats_from_sums(sums: tuple[np.ndarray, np.ndarray, np.ndarray], image_indices: Sequence[int]) -> dict[str, jnp.ndarray]:
    """The readout's ``"stats"`` (per-channel mean, std floored at 1e-6) of ``image_indices`` from `feature_sums`."""
    idx = np.asarray(image_indices, np.int64)
    total, sq, count = (a[idx].sum(0) for a in sums)
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean * mean, 0.0))
    return {"readout": {"mean": jnp.asarray(mean, jnp.float32), "std": jnp.asarray(np.maximum(std, 1e-6), jnp.float32)}}


def feature_stats(grids: Sequence[np.ndarray], image_indices: Sequence[int]) -> dict[str, jnp.ndarray]:
    """Per-channel mean and std of the features of ``image_indices`` (the readout's ``"stats"``).

    Accumulated in float64 over all grid positions; std is floored at 1e-6.
    """
    idx = [int(i) for i in image_indices]
    return stats_from_sums(feature_sums([grids[i] for i in idx]), np.arange(len(idx)))


def minibatches(groups: Sequence[ShapeGroup], batch_size: int, multiple: int, key: jax.Array):
    """Yields (group index, (B,) int32 image indices, (B,) float32 weights) covering every valid image once.

    The valid images are shuffled within each group and the batches of all groups
    interleaved at random; the last batch of a group is padded with weight-0 images so
    that B (``batch_size`` rounded up to ``multiple``) is fixed (one compilation per
    group). The batches do not depend on the device count when ``multiple`` divides
    ``batch_size``.
    """
    size = -(-batch_size // multiple) * multiple
    rng = np.random.default_rng(np.asarray(key, np.uint32))
    batches = []
    for k, group in enumerate(groups):
        order = rng.permutation(np.flatnonzero(np.asarray(group.valid)))
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            weights = np.zeros(size, np.float32)
            weights[: len(idx)] = 1.0
            batches.append((k, np.pad(idx, (0, size - len(idx))).astype(np.int32), weights))
    for j in rng.permutation(len(batches)):
        yield batches[j]
