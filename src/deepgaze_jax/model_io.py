"""Reading a model ``.npz`` (`model.save_model`) without trusting it, for `model.load_model`.

A model file is a zip of ``.npy`` members: ``meta`` (JSON: format and `ModelConfig`),
``head/<path>`` (the head's variables, leading mixture axis) and optionally
``centerbias`` (a log-density template). Before anything is decompressed, the members'
names and sizes in the zip directory and each ``.npy`` header (dtype, shape) are checked
against `MAX_MODEL_BYTES`, so a deflate bomb or a header claiming 10^12 elements costs
nothing; a damaged deflate stream or checksum is caught while reading. Then the config's
values, the head's shapes (against those the config implies) and the finiteness of every
array are checked. Every failure raises `ModelFileError` naming the file.

The centre-bias template is stored relative to its peak and floored `TEMPLATE_FLOOR_NATS`
below it (`clean_template`): a finite but extreme template (values of ±3e38) would
otherwise overflow float32 arithmetic into -inf or NaN densities.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping

import flax
import jax
import numpy as np

__all__ = ["MAX_MODEL_BYTES", "TEMPLATE_FLOOR_NATS", "ModelFileError", "clean_template", "read_model_file"]

MAX_MODEL_BYTES = 64 << 20  # all members, uncompressed; a shipped model is about 1 MB
TEMPLATE_FLOOR_NATS = 1000.0  # below the peak; exp(-1000) is 0 in float32 anyway
_MAX_HEADER_BYTES = 10_000
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_READ_ERRORS = (OSError, EOFError, ValueError, TypeError, KeyError, RecursionError, zipfile.BadZipFile, zlib.error)


class ModelFileError(ValueError):
    """A model file that cannot be used: damaged, oversized, not a model, or inconsistent."""


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """The validated contents of a model file.

    Attributes:
      config: the `ModelConfig`.
      head: {flattened variable path: float32 array}, every leaf finite.
      centerbias: the `clean_template` of the stored template, or None.
    """

    config: Any
    head: dict[str, np.ndarray]
    centerbias: np.ndarray | None


def clean_template(template: Any) -> np.ndarray:
    """A 2-D finite log-density template as float32, relative to its peak and floored
    `TEMPLATE_FLOOR_NATS` below it (the same density, wherever float32 can tell)."""
    values = np.asarray(template, dtype=np.float64)
    if values.ndim != 2 or min(values.shape) < 1:
        raise ValueError(f"centerbias must be a 2-D (H, W) log density, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("centerbias contains NaN or inf: pass a finite log density, e.g. log(p + 1e-20)")
    return np.maximum(values - values.max(), -TEMPLATE_FLOOR_NATS).astype(np.float32)


def _array_name(info: zipfile.ZipInfo) -> str:
    name = info.filename.removesuffix(".npy")
    if not info.filename.endswith(".npy") or not (name in ("meta", "centerbias") or name.startswith("head/")):
        raise ValueError(f"unexpected member {info.filename!r}")
    return name


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One ``.npy`` member; its header is checked against the zip directory before the data is read."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in _HEADER_READERS:
            raise ValueError(f"{info.filename}: unsupported .npy version {version}")
        shape, fortran, dtype = _HEADER_READERS[version](member, max_header_size=_MAX_HEADER_BYTES)
        nbytes = math.prod(shape) * dtype.itemsize
        if dtype.hasobject or member.tell() + nbytes != info.file_size:
            raise ValueError(
                f"{info.filename}: header ({dtype}, shape {shape}) disagrees with its {info.file_size} bytes"
            )
        data = member.read(nbytes)
        if len(data) != nbytes or member.read(1):  # the last read verifies the CRC
            raise ValueError(f"{info.filename}: data does not match its header")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        total = sum(info.file_size for info in infos)
        if total > MAX_MODEL_BYTES:
            raise ValueError(f"its members would take {total} bytes uncompressed, over the limit of {MAX_MODEL_BYTES}")
        return {_array_name(info): _read_member(archive, info) for info in infos}


def _metadata(path: Path, arrays: Mapping[str, np.ndarray], model_format: str) -> dict:
    """The raw config mapping of the ``meta`` record."""
    meta = arrays.get("meta")
    if meta is None or meta.dtype != np.uint8 or meta.ndim != 1:
        raise ValueError("no metadata record (meta: 1-D uint8 JSON)")
    meta = json.loads(meta.tobytes().decode())
    if not isinstance(meta, dict) or meta.get("format") != model_format:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ModelFileError(f"{path} is not a {model_format} file (format={found!r})")
    if not isinstance(meta.get("config"), dict):
        raise ValueError("the metadata has no config")
    return meta["config"]


def _float_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays other than ``meta``, which must be finite float32."""
    out = {name: array for name, array in arrays.items() if name != "meta"}
    for name, array in out.items():
        if array.dtype != np.float32:
            raise ValueError(f"{name} must be float32, not {array.dtype}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} holds NaN or inf values: every parameter must be finite")
    return out


def _is_int(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _config_problems(config: Any) -> list[str]:
    """What makes a `ModelConfig` read from a file unusable (empty if nothing)."""
    taps, features, long_side = config.taps, config.readout_features, config.long_side
    sigmas = (config.init_sigma, config.max_sigma)
    checks = {
        "backbone must be a name": isinstance(config.backbone, str),
        "taps must be null or a non-empty list of names": (
            taps is None or (bool(taps) and all(isinstance(t, str) for t in taps))
        ),
        "readout_features must be widths of 1 to 4096 ending in 1": (
            bool(features) and all(_is_int(f, 1, 4096) for f in features) and features[-1] == 1
        ),
        "long_side must be a multiple of 32 from 32 to 4096": _is_int(long_side, 32, 4096) and long_side % 32 == 0,
        "cell must be 1, 2, 4, 8, 16 or 32": _is_int(config.cell, 1, 32) and 32 % config.cell == 0,
        "need 0 < init_sigma <= max_sigma <= 4096": (
            all(type(s) in (int, float) for s in sigmas) and 0 < sigmas[0] <= sigmas[1] <= 4096
        ),
    }
    return [message for message, ok in checks.items() if not ok]


def _checked_config(path: Path, raw: dict, make_config: Callable[[dict], Any]) -> Any:
    try:
        config = make_config(raw)
        problems = _config_problems(config)
    except (TypeError, ValueError, KeyError) as exc:
        problems = [f"{type(exc).__name__}: {exc}"]
    if problems:
        raise ModelFileError(f"model file {path} has an unusable config {raw}: {'; '.join(problems)}")
    return config


def _head_shapes(
    path: Path, config: Any, init_head: Callable[[Any, jax.Array], Any], backbone_given: bool
) -> dict[str, tuple[int, ...]] | None:
    """{variable path: shape of one component} of the head that ``config`` implies; None for a
    backbone outside the registry whose weights the caller gives (its channels are unknown)."""
    try:
        config.get_backbone()
    except ValueError as exc:
        if backbone_given:
            return None
        raise ModelFileError(f"model file {path}: {exc} (or pass backbone_weights)") from exc
    try:
        head = jax.eval_shape(lambda: init_head(config, jax.random.PRNGKey(0)))
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelFileError(f"model file {path}: its config {config} does not build a head ({exc})") from exc
    return {k: v.shape[1:] for k, v in flax.traverse_util.flatten_dict(head, sep="/").items()}


def _head_problem(head: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]] | None) -> str | None:
    """Why ``head`` does not have exactly the variables ``expected`` (shapes of one component;
    None: any), one common mixture size of at least 1 and positive ``std`` statistics; None if it does."""
    if expected is not None and set(head) != set(expected):
        missing, unexpected = sorted(set(expected) - set(head)), sorted(set(head) - set(expected))
        return f"variables {missing} are missing, {unexpected} unexpected"
    sizes = {array.shape[:1] for array in head.values()}
    wrong = {} if expected is None else {k: a.shape for k, a in head.items() if a.shape[1:] != expected[k]}
    if len(sizes) != 1 or sizes == {(0,)} or wrong:
        return f"mixture sizes {sorted(sizes)}; shapes {wrong} where one component has {expected}"
    if not all(np.all(array > 0) for key, array in head.items() if key.endswith("/std")):
        return "its feature std statistics must be positive"
    return None


def read_model_file(
    path: Path,
    model_format: str,
    make_config: Callable[[dict], Any],
    init_head: Callable[[Any, jax.Array], Any],
    backbone_given: bool = False,
) -> ModelFile:
    """The validated contents of model file ``path``.

    Args:
      path: the ``.npz`` file.
      model_format: the format tag its metadata must carry.
      make_config: the raw config mapping -> a `ModelConfig`.
      init_head: ``(config, key) -> head variables`` with a mixture axis of 1 (only its
        shapes are evaluated).
      backbone_given: the caller brings the backbone's weights, so a config naming a
        backbone outside the registry (a model trained on precomputed features) is
        accepted, its head checked only for one mixture size and positive statistics.

    Raises:
      ModelFileError: naming ``path``: not a zip of ``.npy`` members, damaged, over
        `MAX_MODEL_BYTES`, another format, no or an unusable config, a head whose variables
        or shapes do not fit the config, or a non-finite or non-float32 array.
    """
    try:
        arrays = _read_arrays(path)
        config = _metadata(path, arrays, model_format)
        floats = _float_arrays(arrays)
        centerbias = clean_template(floats["centerbias"]) if "centerbias" in floats else None
    except ModelFileError:
        raise
    except _READ_ERRORS as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc}; save it again with save_model") from exc
    head = {name.removeprefix("head/"): array for name, array in floats.items() if name.startswith("head/")}
    model_config = _checked_config(path, config, make_config)
    problem = _head_problem(head, _head_shapes(path, model_config, init_head, backbone_given))
    if problem:
        raise ModelFileError(f"model file {path} has a head that does not fit its config: {problem}")
    return ModelFile(config=model_config, head=head, centerbias=centerbias)
