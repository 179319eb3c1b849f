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
`WeightsError` naming the forbidden global.

`fetch` resolves a weights file: explicit path argument, then an environment
variable, then the cache directory, then a checksum-verified download.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import http.client
import io
import logging
import os
import pickle
import struct
import tempfile
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Mapping

import ml_dtypes
import numpy as np

from deepgaze_jax import settings

__all__ = ["WeightsError", "read_pth", "fetch", "default_cache_dir", "CACHE_ENV_VAR"]

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = settings.CACHE
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_CHUNK = 1 << 20

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


def _rebuild_parameter(data: _TensorRef, requires_grad: bool, backward_hooks: Any) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_parameter``: a parameter is its tensor."""
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler resolving only `_ALLOWED_GLOBALS`; records every storage it meets."""

    def __init__(self, file: BinaryIO, path: Path):
        super().__init__(file)
        self._path = path
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
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
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"storage {key} has no typed storage class")
        if len(pid) == 6 and pid[5] is not None:
            raise WeightsError(f"{self._path}: storage views (pre-1.0 legacy files) are not supported")
        ref = self.storages.setdefault(key, _StorageRef(key, storage_type.dtype, numel))
        if ref.dtype != storage_type.dtype or ref.numel != numel:
            raise pickle.UnpicklingError(f"storage {key} is declared twice with different types or sizes")
        return ref


def _flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, _TensorRef]]:
    """Every tensor in nested mappings, keyed by its dotted path; other values are dropped."""
    if isinstance(obj, _TensorRef):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))


def _state_dict(obj: Any, path: Path) -> dict[str, _TensorRef]:
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a state dict, found a pickled {type(obj).__name__}")
    for wrapper in ("state_dict", "model"):
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    return dict(_flatten(obj))


def _materialise(ref: _TensorRef, buffer: np.ndarray, owned: set[str]) -> np.ndarray:
    """The tensor ``ref`` as a C-contiguous array over (or copied from) its storage ``buffer``.

    The first tensor that covers its whole storage contiguously takes the buffer
    without a copy (``owned`` records that); every other one gets its own copy.
    """
    shape, stride, offset = ref.shape, ref.stride, ref.offset
    size = int(np.prod(shape, dtype=np.int64))
    if size == 0:
        return np.zeros(shape, buffer.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(shape, stride))
    if offset < 0 or min(stride, default=0) < 0 or last >= buffer.size:
        raise ValueError(f"tensor (offset {offset}, shape {shape}, stride {stride}) exceeds its storage")
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
    with zipfile.ZipFile(file) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise WeightsError(f"{path}: a zip archive but not a torch.save file (no unique <prefix>/data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        unpickler = _SafeUnpickler(io.BytesIO(archive.read(pickles[0])), path)
        tensors = {k: v for k, v in _state_dict(unpickler.load(), path).items() if wanted(k)}
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
    keys = _load_pickle(file, path)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError("the storage key list is malformed")
    needed = {t.storage.key for t in tensors.values()}
    file_size = os.fstat(file.fileno()).st_size
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
