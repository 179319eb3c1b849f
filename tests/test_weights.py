"""weights.py: torch-free .pth reading (both formats, refusing code) and fetch/caching."""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from deepgaze_jax.weights import WeightsError, fetch, read_pth  # noqa: E402

FORMATS = pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])


def _save(obj, path: Path, legacy: bool) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def _state_dict() -> dict:
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=gen)
    return {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=gen),
        "transposed": base.t(),
        "slice": base[1:4, 2:7],
        "row": base[5],
        "half": torch.randn(7, generator=gen).half(),
        "bf16": torch.randn(2, 3, generator=gen).bfloat16(),
        "double": torch.randn(3, generator=gen).double(),
        "long": torch.arange(-3, 9),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "param": torch.nn.Parameter(torch.randn(2, 2, generator=gen)),
        "bn.num_batches_tracked": torch.tensor(17),
    }


_DTYPES = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float64: "float64",
    torch.int64: "int64",
    torch.bool: "bool",
}


def _numpy(t) -> np.ndarray:
    t = t.detach()
    return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()


@FORMATS
def test_round_trip_is_exact(tmp_path, legacy):
    sd = _state_dict()
    loaded = read_pth(_save(sd, tmp_path / "w.pth", legacy))
    assert sorted(loaded) == sorted(sd)
    for key, tensor in sd.items():
        array = loaded[key]
        assert array.shape == tuple(tensor.shape), key
        assert array.flags.c_contiguous, key
        assert array.dtype.name == _DTYPES[tensor.dtype], key
        np.testing.assert_array_equal(np.asarray(array, dtype=_numpy(tensor).dtype), _numpy(tensor), err_msg=key)


@FORMATS
def test_views_sharing_storage_do_not_alias(tmp_path, legacy):
    base = torch.arange(12.0).reshape(3, 4)
    loaded = read_pth(_save({"a": base, "b": base.view(4, 3), "c": base[1]}, tmp_path / "w.pth", legacy))
    loaded["a"][0, 0] = -1.0
    assert loaded["b"][0, 0] == 0.0 and loaded["c"][0] == 4.0


@FORMATS
def test_key_filter_and_wrapped_state_dict(tmp_path, legacy):
    sd = {"state_dict": {"features.0.weight": torch.ones(2), "classifier.0.weight": torch.zeros(3)}, "epoch": 3}
    loaded = read_pth(_save(sd, tmp_path / "w.pth", legacy), keys=lambda k: k.startswith("features."))
    assert list(loaded) == ["features.0.weight"]


def test_big_endian_zip_record(tmp_path):
    """A zip whose byteorder record says big: storages are byte-swapped on load."""
    sd = {"w": torch.randn(3, 5), "h": torch.randn(4).half(), "i": torch.arange(6)}
    little = _save(sd, tmp_path / "little.pth", legacy=False)
    big = tmp_path / "big.pth"
    with zipfile.ZipFile(little) as src, zipfile.ZipFile(big, "w") as dst:
        itemsize = {f"{k}": v.element_size() for k, v in sd.items()}
        order = list(sd)
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in info.filename and info.filename.rsplit("/", 1)[1].isdigit():
                size = itemsize[order[int(info.filename.rsplit("/", 1)[1])]]
                data = np.frombuffer(data, f"u{size}").byteswap().tobytes()
            dst.writestr(info, data)
    loaded = read_pth(big)
    for key, tensor in sd.items():
        np.testing.assert_array_equal(loaded[key], _numpy(tensor))


class _Exploit:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def _malicious_zip(path: Path, payload: bytes) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", payload)
        archive.writestr("evil/byteorder", "little")


def _malicious_legacy(path: Path, payload: bytes, slot: int) -> None:
    pickles = [pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, {})]
    pickles[slot] = payload
    path.write_bytes(b"".join(pickles) + pickle.dumps([], protocol=2))


@pytest.mark.parametrize(
    "container,slot", [("zip", None), ("legacy", 0), ("legacy", 2), ("legacy", 3)], ids=["zip", "magic", "sys", "obj"]
)
@pytest.mark.parametrize("func", [os.system, eval], ids=["os.system", "eval"])
def test_code_in_pickle_is_refused_not_run(tmp_path, container, slot, func):
    sentinel = tmp_path / "pwned"
    command = f"touch {sentinel}" if func is os.system else f"open({str(sentinel)!r}, 'w').close()"
    payload = pickle.dumps({"w": _Exploit(func, command)}, protocol=2)
    path = tmp_path / "evil.pth"
    if container == "zip":
        _malicious_zip(path, payload)
    else:
        _malicious_legacy(path, payload, slot)
    forbidden = r"refusing to load the global ((posix|os|nt)\.system|(__builtin__|builtins)\.eval)"
    with pytest.raises(WeightsError, match=forbidden):
        read_pth(path)
    assert not sentinel.exists()


@FORMATS
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.97])
def test_truncated_files_raise_weights_error(tmp_path, legacy, fraction):
    data = _save(_state_dict(), tmp_path / "full.pth", legacy).read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(WeightsError, match=str(path)):
        read_pth(path)


def test_not_a_weights_file(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"definitely not torch" * 10)
    with pytest.raises(WeightsError, match="not a PyTorch weights file"):
        read_pth(path)
    with pytest.raises(WeightsError, match="no such file"):
        read_pth(tmp_path / "missing.pth")


def test_pickled_module_is_refused(tmp_path):
    path = _save(torch.nn.Linear(2, 2), tmp_path / "module.pth", legacy=False)
    with pytest.raises(WeightsError, match="refusing to load the global torch.nn"):
        read_pth(path)


# --- files crafted to exhaust memory or time (issue 14, item 2) ------------------------------


def _shared_dicts(depth: int) -> dict:
    """A dict tree of 2**depth paths but ``depth`` distinct dicts (pickled once each, via the memo)."""
    node = {"w": torch.zeros(1)}
    for _ in range(depth):
        node = {"a": node, "b": node}
    return node


def _self_containing() -> dict:
    node = {"w": torch.zeros(1)}
    node["self"] = node
    return node


@pytest.mark.parametrize(
    "make", [lambda: _shared_dicts(64), _self_containing], ids=["shared-dicts-depth-64", "self-containing"]
)
@FORMATS
def test_shared_or_self_containing_dicts_are_refused(tmp_path, make, legacy):
    path = _save(make(), tmp_path / "w.pth", legacy)
    assert path.stat().st_size < 10_000
    with pytest.raises(WeightsError, match="reached twice"):
        read_pth(path)


_DEEP_DICTS = b"\x80\x02" + b"}X\x01\x00\x00\x00a" * 5_000 + b"N" + b"s" * 5_000 + b"."
_TUPLE_KEY_DEEP = b"\x80\x02}N" + b"\x85" * 1_000_000 + b"K\x01s."  # (((...(None,)...),),): 1
_TUPLE_KEY_SHARED = b"\x80\x02}N\x85q\x000" + b"h\x00h\x00\x86q\x000" * 64 + b"h\x00K\x01s."  # t = (t, t) 64 times
_HUGE_BYTES = b"\x80\x04\x8e" + (1 << 62).to_bytes(8, "little") + b"."  # BINBYTES8 of 2**62 bytes


@pytest.mark.parametrize(
    "payload",
    [_DEEP_DICTS, _TUPLE_KEY_DEEP, _TUPLE_KEY_SHARED, _HUGE_BYTES],
    ids=["dicts-5000-deep", "tuple-key-1e6-deep", "tuple-key-shared-64", "binbytes8-2**62"],
)
@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_crafted_pickles_raise_weights_error(tmp_path, payload, container):
    """Nesting, memo sharing and declared lengths: a WeightsError, not a RecursionError,
    MemoryError, hang or crash of the interpreter (a 1e6-deep tuple key overflows the C stack)."""
    path = tmp_path / "evil.pth"
    if container == "zip":
        _malicious_zip(path, payload)
    else:
        _malicious_legacy(path, payload, 3)
    with pytest.raises(WeightsError, match=str(path)):
        read_pth(path)


def _deflated_copy(source: Path, target: Path) -> Path:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    return target


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_views_larger_than_their_storage_are_refused(tmp_path, legacy):
    """A stride-0 (20000, 20000) view of a one-element storage would be a 1.6 GB array."""
    path = _save({"w": torch.zeros(1).expand(20000, 20000)}, tmp_path / "w.pth", legacy)
    with pytest.raises(WeightsError, match="does not fit its storage"):
        read_pth(path)


def test_many_views_of_one_storage_or_a_deflate_bomb_are_refused(tmp_path):
    base = torch.zeros(100_000)
    views = _save({f"k{i}": base[:] for i in range(300)}, tmp_path / "views.pth", legacy=False)
    zeros = _save({"w": torch.zeros(4_000_000)}, tmp_path / "zeros.pth", legacy=False)
    bomb = _deflated_copy(zeros, tmp_path / "bomb.pth")
    for path in (views, bomb):
        with pytest.raises(WeightsError, match="times the file"):
            read_pth(path)


def test_deflated_zip_of_real_weights_still_loads(tmp_path):
    sd = _state_dict()
    loaded = read_pth(_deflated_copy(_save(sd, tmp_path / "w.pth", legacy=False), tmp_path / "deflated.pth"))
    np.testing.assert_array_equal(loaded["conv.weight"], _numpy(sd["conv.weight"]))


# --- a refused file must not poison later loads (issue 14, item 3) ----------------------------

_BUILD_ON_STORAGE = b"ctorch\nFloatStorage\n}S'dtype'\nS'x'\nsb."
_BUILD_ON_REBUILD = b"ctorch._utils\n_rebuild_tensor_v2\n(N}S'__defaults__'\n)stb."


@pytest.mark.parametrize("payload", [_BUILD_ON_STORAGE, _BUILD_ON_REBUILD], ids=["FloatStorage", "_rebuild_tensor_v2"])
def test_build_on_a_stand_in_does_not_poison_later_loads(tmp_path, payload):
    evil = tmp_path / "evil.pth"
    _malicious_zip(evil, payload)
    with pytest.raises(WeightsError):
        read_pth(evil)
    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    for legacy in (False, True):
        loaded = read_pth(_save(weights, tmp_path / f"ok-{legacy}.pth", legacy))
        np.testing.assert_array_equal(loaded["w"], weights["w"].numpy())


# --- fetch --------------------------------------------------------------------------------


@pytest.fixture
def source(tmp_path) -> tuple[Path, str]:
    path = tmp_path / "src" / "weights.bin"
    path.parent.mkdir()
    path.write_bytes(os.urandom(3000))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_overrides_take_precedence(tmp_path, source, monkeypatch):
    path, _ = source
    unreachable = "http://127.0.0.1:9/x.pth"
    assert fetch(unreachable, "00", "x.pth", cache_dir=tmp_path, path=path) == path
    monkeypatch.setenv("DGJ_TEST_WEIGHTS", str(path))
    assert fetch(unreachable, "00", "x.pth", cache_dir=tmp_path, env_var="DGJ_TEST_WEIGHTS") == path
    with pytest.raises(WeightsError, match="does not exist"):
        fetch(unreachable, "00", "x.pth", cache_dir=tmp_path, path=tmp_path / "nope.pth")


def test_fetch_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("DGJ_TEST_WEIGHTS", raising=False)
    url = "http://127.0.0.1:9/x.pth"
    with pytest.raises(WeightsError) as info:
        fetch(url, "00", "x.pth", cache_dir=tmp_path / "cache", env_var="DGJ_TEST_WEIGHTS", timeout=5)
    message = str(info.value)
    for needle in ("x.pth", url, str(tmp_path / "cache" / "x.pth"), "DGJ_TEST_WEIGHTS", "path="):
        assert needle in message
    assert not list((tmp_path / "cache").iterdir())


def test_fetch_downloads_verifies_and_caches(tmp_path, source, monkeypatch):
    path, digest = source
    monkeypatch.setenv("DEEPGAZE_JAX_CACHE", str(tmp_path / "cache"))
    got = fetch(path.as_uri(), digest[:8], "w-1234.bin")
    assert got == tmp_path / "cache" / "w-1234.bin" and got.read_bytes() == path.read_bytes()
    path.unlink()  # a second call is served from the cache
    assert fetch(path.as_uri(), digest, "w-1234.bin") == got


def test_fetch_checksum_mismatch_deletes_download(tmp_path, source):
    path, digest = source
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "f" * 8
    with pytest.raises(WeightsError, match=f"checksum mismatch.*{wrong}.*{digest}.*deleted"):
        fetch(path.as_uri(), wrong, "w.bin", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())

