"""Pretrained weights: a torch-free, code-execution-free ``.pth`` reader and a cached downloader.

`read_pth` parses both PyTorch serialisation formats without importing torch:

* zip (``torch.save`` default since 1.6): ``<prefix>/data.pkl`` holds the pickled
  object, ``<prefix>/data/<key>`` the raw bytes of each storage and
  ``<prefix>/byteorder`` their endianness (little when absent);
* legacy (``_use_new_zipfile_serialization=False``): five consecutive pickles
  (magic number, protocol version, sys info, the object, the sorted storage keys),
  then every storage as an int64 element count followed by its raw bytes.

The object pickle is read by `_SafeUnpickler`, whose ``find_class`` resolves only an
allow-list of globals (``collections.OrderedDict``, the tensor/parameter rebuild
functions and the typed ``torch.*Storage`` classes) to inert local stand-ins, so no
callable from the file is ever looked up, let alone run. Anything else raises
`WeightsError` naming the forbidden global. The stand-ins are made afresh for each
pickle, so one that a file alters (a ``BUILD`` opcode) cannot affect a later load.

A crafted file of a few hundred bytes must not exhaust memory or time either:
`pickle_scan.check_pickle` vets every pickle before it is unpickled (declared lengths,
tuple sizes); the tensor tree is walked once per dict, at most `_MAX_DEPTH` deep; every
view must lie inside its storage and hold no more elements than it; and the storages
read plus the arrays returned may take at most `_MAX_EXPANSION` times the file's size.

`fetch` resolves a weights file: explicit path argument, then an environment
variable, then the cache directory, then a checksum-verified download.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import http.client
import io
import logging
import math
import os
import pickle
import struct
import tempfile
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

import ml_dtypes
import numpy as np

from deepgaze_jax.pickle_scan import check_pickle
from deepgaze_jax import settings

__all__ = ["WeightsError", "read_pth", "fetch", "default_cache_dir", "CACHE_ENV_VAR"]

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = settings.CACHE
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_CHUNK = 1 << 20
_MAX_DEPTH = 32  # nesting of dicts in the saved object
_MAX_EXPANSION = 16  # bytes read and returned per byte of file (a plain state dict needs about 2)

_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
}

# Errors that a damaged file can provoke anywhere in parsing.
_PARSE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    struct.error,
    OverflowError,
    UnicodeDecodeError,
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,
)


class WeightsError(RuntimeError):
    """A weights file that cannot be found, downloaded, verified or parsed."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stand-in for a ``torch.*Storage`` class: only its element dtype matters."""

    dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    """A storage named in the pickle; its bytes are read after unpickling."""

    key: str
    dtype: np.dtype
    numel: int


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    """A strided view into a `_StorageRef`, materialised by `_materialise`."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool,
    backward_hooks: Any,
    metadata: Any = None,
) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: records the view, copies nothing."""
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError(f"tensor refers to {type(storage).__name__}, not a storage")
    shape, strides = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(shape) != len(strides):
        raise pickle.UnpicklingError(f"tensor size {shape} and stride {strides} differ in length")
    return _TensorRef(storage, int(storage_offset), shape, strides)


def _check_view(key: str, ref: _TensorRef) -> None:
    """Raises ValueError unless tensor ``key`` lies inside its storage and holds no more elements than it.

    A view with more elements than its storage (zero or overlapping strides) would turn a
    few bytes of file into an arbitrarily large array.
    """
    shape, stride, offset, numel = ref.shape, ref.stride, ref.offset, ref.storage.numel
    if len(shape) > 64 or min((offset, *shape, *stride)) < 0:
        raise ValueError(f"tensor {key} has a negative offset, size or stride, or over 64 dimensions")
    size = math.prod(shape)
    last = offset + sum((n - 1) * s for n, s in zip(shape, stride))
    if size and (last >= numel or size > numel):
        raise ValueError(
            f"tensor {key} (offset {offset}, shape {shape}, stride {stride}) does not fit its storage of "
            f"{numel} elements (an expanded view? save tensor.contiguous())"
        )


def _check_sizes(tensors: Mapping[str, _TensorRef], file_size: int) -> None:
    """Raises ValueError for a bad view, or for storages and arrays over `_MAX_EXPANSION` x the file size."""
    for key, ref in tensors.items():
        _check_view(key, ref)
    storages = {ref.storage for ref in tensors.values()}
    total = sum(s.numel * s.dtype.itemsize for s in storages)
    total += sum(math.prod(ref.shape) * ref.storage.dtype.itemsize for ref in tensors.values())
    if total > _MAX_EXPANSION * file_size:
        raise ValueError(
            f"its tensors would take {total} bytes, over {_MAX_EXPANSION} times the file's {file_size} bytes "
            "(overlapping views, or compressed storages)"
        )


def _rebuild_parameter(data: _TensorRef, requires_grad: bool, backward_hooks: Any) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_parameter``: a parameter is its tensor."""
    return data


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The allow-list, as new stand-ins on each call: a file that alters one (BUILD) alters only its own."""
    return {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): functools.partial(_rebuild_tensor_v2),
        ("torch._utils", "_rebuild_parameter"): functools.partial(_rebuild_parameter),
        **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
    }


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler resolving only `_allowed_globals`; records every storage it meets.

    `load` vets the pickle with `check_pickle` first.
    """

    def __init__(self, file: BinaryIO, path: Path):
        super().__init__(file)
        self._file = file
        self._path = path
        self._globals = _allowed_globals()
        self.storages: dict[str, _StorageRef] = {}

    def load(self) -> Any:
        start = self._file.tell()
        check_pickle(self._file)
        self._file.seek(start)
        return super().load()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._globals[(module, name)]
        except KeyError:
            raise WeightsError(
                f"{self._path}: refusing to load the global {module}.{name} "
                "(only tensors, parameters and ordered dicts are allowed in a weights file)"
            ) from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        # zip: ("storage", type, key, location, numel); legacy adds view_metadata.
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] not in ("storage", b"storage"):
            kind = pid[0] if isinstance(pid, tuple) and pid else pid
            raise WeightsError(
                f"{self._path}: unsupported persistent object {kind!r} "
                "(save a state_dict of tensors, not a pickled module)"
            )
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"storage key {key!r} is not a string or its size {numel!r} not a count")
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"storage {key} has no typed storage class")
        if len(pid) == 6 and pid[5] is not None:
            raise WeightsError(f"{self._path}: storage views (pre-1.0 legacy files) are not supported")
        ref = self.storages.setdefault(key, _StorageRef(key, storage_type.dtype, numel))
        if ref.dtype != storage_type.dtype or ref.numel != numel:
            raise pickle.UnpicklingError(f"storage {key} is declared twice with different types or sizes")
        return ref


def _flatten(obj: Any, path: Path) -> dict[str, _TensorRef]:
    """Every tensor in nested mappings, keyed by its dotted path; other values are dropped.

    Each mapping is walked once: one reached twice (a shared reference, or a dict that
    contains itself), one nested over `_MAX_DEPTH` deep or a key that is not a string
    or an integer raises `WeightsError`.
    """
    tensors: dict[str, _TensorRef] = {}
    seen: set[int] = set()

    def walk(node: Any, prefix: str, depth: int) -> None:
        if isinstance(node, _TensorRef):
            tensors[prefix] = node
            return
        if not isinstance(node, Mapping):
            return
        where = f"the dict at {prefix!r}" if prefix else "the top dict"
        if id(node) in seen or depth > _MAX_DEPTH:
            raise WeightsError(
                f"{path}: {where} is reached twice (shared or self-containing) or nested over {_MAX_DEPTH} "
                "deep; save a plain state dict (model.state_dict())"
            )
        seen.add(id(node))
        for key, value in node.items():
            if not isinstance(key, (str, int)):
                raise WeightsError(f"{path}: {where} has a key of type {type(key).__name__}, not a string")
            walk(value, f"{prefix}.{key}" if prefix else str(key), depth + 1)

    walk(obj, "", 0)
    return tensors


def _state_dict(obj: Any, path: Path) -> dict[str, _TensorRef]:
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a state dict, found a pickled {type(obj).__name__}")
    for wrapper in ("state_dict", "model"):
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    return _flatten(obj, path)


def _materialise(ref: _TensorRef, buffer: np.ndarray, owned: set[str]) -> np.ndarray:
    """The tensor ``ref`` as a C-contiguous array over (or copied from) its storage ``buffer``.

    The first tensor that covers its whole storage contiguously takes the buffer
    without a copy (``owned`` records that); every other one gets its own copy.
    """
    shape, stride, offset = ref.shape, ref.stride, ref.offset
    size = math.prod(shape)
    if size == 0:
        return np.zeros(shape, buffer.dtype)
    contiguous = all(n == 1 or s == int(np.prod(shape[i + 1 :])) for i, (n, s) in enumerate(zip(shape, stride)))
    if offset == 0 and size == buffer.size and contiguous and ref.storage.key not in owned:
        owned.add(ref.storage.key)
        return buffer.reshape(shape)
    view = np.lib.stride_tricks.as_strided(
        buffer[offset:], shape=shape, strides=tuple(s * buffer.itemsize for s in stride), writeable=False
    )
    return np.array(view, order="C", copy=True)


def _read_exact(file: BinaryIO, nbytes: int, what: str) -> bytearray:
    buffer = bytearray(nbytes)
    got = file.readinto(buffer)
    if got != nbytes:
        raise EOFError(f"truncated {what}: expected {nbytes} bytes, got {got or 0}")
    return buffer


def _as_array(raw: bytearray, ref: _StorageRef, big_endian: bool) -> np.ndarray:
    array = np.frombuffer(raw, dtype=ref.dtype)
    return array.byteswap() if big_endian and ref.dtype.itemsize > 1 else array


def _read_zip(file: BinaryIO, path: Path, wanted: Callable[[str], bool]) -> dict[str, np.ndarray]:
    file_size = os.fstat(file.fileno()).st_size
    with zipfile.ZipFile(file) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise WeightsError(f"{path}: a zip archive but not a torch.save file (no unique <prefix>/data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        if archive.getinfo(pickles[0]).file_size > _MAX_EXPANSION * file_size:
            raise ValueError(f"record {pickles[0]} claims to be over {_MAX_EXPANSION} times the file's size")
        unpickler = _SafeUnpickler(io.BytesIO(archive.read(pickles[0])), path)
        tensors = {k: v for k, v in _state_dict(unpickler.load(), path).items() if wanted(k)}
        _check_sizes(tensors, file_size)
        names = set(archive.namelist())
        byteorder = archive.read(prefix + "byteorder") if prefix + "byteorder" in names else b"little"
        if byteorder not in (b"little", b"big"):
            raise ValueError(f"unknown byteorder record {byteorder!r}")
        buffers: dict[str, np.ndarray] = {}
        for ref in {t.storage for t in tensors.values()}:
            name, nbytes = f"{prefix}data/{ref.key}", ref.numel * ref.dtype.itemsize
            if archive.getinfo(name).file_size < nbytes:
                raise ValueError(f"record {name} is smaller than its {nbytes} bytes of storage")
            with archive.open(name) as member:
                raw = _read_exact(member, nbytes, f"storage {ref.key}")
            buffers[ref.key] = _as_array(raw, ref, byteorder == b"big")
    owned: set[str] = set()
    return {k: _materialise(t, buffers[t.storage.key], owned) for k, t in tensors.items()}


def _load_pickle(file: BinaryIO, path: Path) -> Any:
    return _SafeUnpickler(file, path).load()


def _read_legacy(file: BinaryIO, path: Path, wanted: Callable[[str], bool]) -> dict[str, np.ndarray]:
    try:
        magic = _load_pickle(file, path)
    except _PARSE_ERRORS:
        magic = None
    if magic != _LEGACY_MAGIC:
        raise WeightsError(f"{path}: not a PyTorch weights file (neither a zip archive nor a legacy .pth)")
    protocol = _load_pickle(file, path)
    if protocol != _LEGACY_PROTOCOL:
        raise WeightsError(f"{path}: unsupported legacy protocol version {protocol!r}")
    sys_info = _load_pickle(file, path)
    big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    unpickler = _SafeUnpickler(file, path)
    tensors = {k: v for k, v in _state_dict(unpickler.load(), path).items() if wanted(k)}
    file_size = os.fstat(file.fileno()).st_size
    _check_sizes(tensors, file_size)
    keys = _load_pickle(file, path)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError("the storage key list is malformed")
    needed = {t.storage.key for t in tensors.values()}
    buffers: dict[str, np.ndarray] = {}
    for key in keys:
        ref = unpickler.storages[key]
        (numel,) = struct.unpack("<q", _read_exact(file, 8, f"size of storage {key}"))
        if numel != ref.numel:
            raise ValueError(f"storage {key} holds {numel} elements, the pickle says {ref.numel}")
        nbytes = numel * ref.dtype.itemsize
        if file.tell() + nbytes > file_size:
            raise EOFError(f"truncated storage {key}: {nbytes} bytes expected, {file_size - file.tell()} left")
        if key in needed:
            buffers[key] = _as_array(_read_exact(file, nbytes, f"storage {key}"), ref, big_endian)
        else:
            file.seek(nbytes, os.SEEK_CUR)
    if needed - buffers.keys():
        raise ValueError(f"storages {sorted(needed - buffers.keys())} are missing from the file")
    owned: set[str] = set()
    return {k: _materialise(t, buffers[t.storage.key], owned) for k, t in tensors.items()}


def read_pth(path: str | os.PathLike, keys: Callable[[str], bool] | None = None) -> dict[str, np.ndarray]:
    """Read the tensors of a ``torch.save`` file as NumPy arrays, without torch.

    Args:
      path: a ``.pth`` file in the zip or legacy format holding a (possibly nested)
        state dict; a dict wrapped under ``"state_dict"`` or ``"model"`` is unwrapped.
      keys: optional predicate on the dotted key; storages of tensors it rejects are
        never read (e.g. skip a 400 MB classifier).

    Returns:
      ``{dotted key: C-contiguous array}`` in the saved dtype (bfloat16 as ``ml_dtypes.bfloat16``);
      non-tensor entries are dropped.

    Raises:
      WeightsError: missing, truncated or corrupt file, or a pickle referring to any global
        outside the allow-list (nothing from the file is executed).
    """
    path = Path(path)
    wanted = keys or (lambda _: True)
    try:
        with open(path, "rb") as file:
            is_zip = file.read(4) == b"PK\x03\x04"
            file.seek(0)
            return (_read_zip if is_zip else _read_legacy)(file, path, wanted)
    except WeightsError:
        raise
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file") from None
    except _PARSE_ERRORS as exc:
        raise WeightsError(f"{path}: corrupt or truncated weights file ({type(exc).__name__}: {exc})") from exc


def default_cache_dir() -> Path:
    """The weights cache: ``$DEEPGAZE_JAX_CACHE`` or ``~/.cache/deepgaze_jax``."""
    return settings.cache_dir()


def _existing(path: str | os.PathLike, source: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} (from {source}) does not exist")
    return path


def _download(url: str, target: Path, timeout: float) -> tuple[str, str]:
    """Download ``url`` to a temporary file next to ``target``; returns (temp path, SHA-256 hex digest)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp, digest.hexdigest()


def fetch(
    url: str,
    sha256: str,
    filename: str,
    cache_dir: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    env_var: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Local path of a weights file, downloading it into the cache on first use.

    Resolution order: ``path`` argument; environment variable ``env_var``;
    ``<cache_dir>/<filename>`` (``cache_dir`` defaults to `default_cache_dir()`); download of
    ``url``, whose SHA-256 must start with ``sha256`` (a prefix such as torchvision's 8
    hex digits, or the full digest), atomically moved into the cache.

    Raises:
      WeightsError: an override that does not exist; a failed download (the message names
        the file, the URL, where to put it and both overrides); a checksum mismatch (the
        download is deleted).
    """
    if path is not None:
        return _existing(path, "the path argument")
    if env_var and settings.get(env_var):
        return _existing(settings.get(env_var), f"${env_var}")
    target = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / filename
    if target.is_file():
        return target
    logger.info("downloading %s to %s", url, target)
    try:
        tmp, digest = _download(url, target, timeout)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        override = f"pass path=... or set ${env_var}" if env_var else "pass path=..."
        raise WeightsError(
            f"could not download {filename} from {url} ({exc}). Download it yourself and put it at "
            f"{target}, or {override} to point to an existing copy."
        ) from exc
    if not digest.startswith(sha256.lower()):
        os.unlink(tmp)
        raise WeightsError(
            f"checksum mismatch for {filename} downloaded from {url}: expected SHA-256 starting with "
            f"{sha256.lower()}, got {digest}; the download was deleted"
        )
    os.replace(tmp, target)
    return target
