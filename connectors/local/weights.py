"""Read packaged network weights into numpy without torch.

Two formats carry the offline model's weights:

* PyTorch ``.pth`` state dicts. The legacy format (before torch 1.6) is a run of pickles
  (magic number, protocol version, system info, the state dict, the list of storage keys)
  followed by every storage as an int64 element count and its raw little-endian bytes; the
  zip format keeps the state dict in ``*/data.pkl`` and each storage in ``*/data/<key>``.
  The state dict pickle only names an ordered dict, tensors rebuilt from storages, and
  storage types. The unpickler below resolves those names and refuses every other one, so
  a crafted file cannot run code.
* safetensors: an 8-byte little-endian header length, a JSON header (dtype, shape, byte
  offsets per tensor), then the raw bytes.
"""

from __future__ import annotations

import collections
import io
import json
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
from imgrag._errors import WeightsError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# Storage class names (torch.FloatStorage, ...) and their element types.
_STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

_SAFETENSORS_DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


@dataclass(frozen=True, slots=True)
class _StorageRef:
    key: str
    dtype: np.dtype[Any]


@dataclass(frozen=True, slots=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(
    storage: _StorageRef, offset: int, shape: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> _TensorRef:
    # torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)
    return _TensorRef(storage, int(offset), tuple(shape), tuple(stride))


@dataclass(frozen=True, slots=True)
class _StorageType:
    """Stands for ``torch.FloatStorage`` and the like, which the pickle only names."""

    name: str


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only what a state dict of plain tensors needs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise WeightsError(f"refusing to load {module}.{name} from a weights file")

    def persistent_load(self, pid: Any) -> _StorageRef:
        # ("storage", storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise WeightsError(f"unexpected persistent id in a weights file: {pid!r:.80}")
        kind = pid[1]
        if not isinstance(kind, _StorageType):
            raise WeightsError(f"unsupported storage type in a weights file: {kind!r:.80}")
        return _StorageRef(str(pid[2]), _STORAGE_DTYPES[kind.name])


def _materialize(
    tensors: dict[str, _TensorRef], storages: dict[str, npt.NDArray[Any]]
) -> dict[str, npt.NDArray[Any]]:
    out: dict[str, npt.NDArray[Any]] = {}
    for name, ref in tensors.items():
        flat = storages[ref.storage.key]
        itemsize = flat.dtype.itemsize
        needed = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True))
        if any(n == 0 for n in ref.shape):
            out[name] = np.zeros(ref.shape, flat.dtype)
            continue
        if needed >= flat.size:
            raise WeightsError(f"tensor {name} reaches past the end of its storage")
        if not ref.shape:  # as_strided would give a scalar shape (1,)
            out[name] = np.array(flat[ref.offset])
            continue
        view = np.lib.stride_tricks.as_strided(
            flat[ref.offset :],
            shape=ref.shape,
            strides=tuple(s * itemsize for s in ref.stride),
            writeable=False,
        )
        out[name] = np.ascontiguousarray(view)
    return out


def _tensor_dict(obj: Any) -> dict[str, _TensorRef]:
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, _TensorRef) for k, v in obj.items()
    ):
        raise WeightsError("the weights file does not hold a flat state dict of tensors")
    return dict(obj)


def read_torch_state_dict(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Every tensor of a ``.pth`` state dict as a contiguous numpy array (no torch needed)."""
    if zipfile.is_zipfile(path):
        return _read_zip_format(path)
    with path.open("rb") as fh:
        return _read_legacy_format(fh)


def _read_legacy_format(fh: IO[bytes]) -> dict[str, npt.NDArray[Any]]:
    def load() -> Any:
        return _StateDictUnpickler(fh).load()

    magic = load()
    if magic != _LEGACY_MAGIC:
        raise WeightsError("not a PyTorch weights file (bad magic number)")
    protocol = load()
    if protocol != 1001:
        raise WeightsError(f"unsupported PyTorch serialization protocol {protocol!r}")
    sys_info = load()
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian", False)):
        raise WeightsError("only little-endian PyTorch weights files are supported")
    tensors = _tensor_dict(load())
    keys = load()
    by_key = {ref.storage.key: ref.storage for ref in tensors.values()}
    storages: dict[str, npt.NDArray[Any]] = {}
    for key in keys:
        ref = by_key.get(str(key))
        (count,) = struct.unpack("<q", fh.read(8))
        if ref is None:
            raise WeightsError(f"storage {key!r} is not used by any tensor")
        raw = fh.read(count * ref.dtype.itemsize)
        if len(raw) != count * ref.dtype.itemsize:
            raise WeightsError("the weights file is truncated")
        storages[ref.key] = np.frombuffer(raw, dtype=ref.dtype)
    return _materialize(tensors, storages)


def _read_zip_format(path: Path) -> dict[str, npt.NDArray[Any]]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise WeightsError("not a PyTorch weights archive (no data.pkl)")
        prefix = pkl[: -len("data.pkl")]
        tensors = _tensor_dict(_StateDictUnpickler(io.BytesIO(zf.read(pkl))).load())
        storages: dict[str, npt.NDArray[Any]] = {}
        for ref in {t.storage for t in tensors.values()}:
            raw = zf.read(f"{prefix}data/{ref.key}")
            storages[ref.key] = np.frombuffer(raw, dtype=ref.dtype)
    return _materialize(tensors, storages)


def read_safetensors(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Every tensor of a ``.safetensors`` file as a numpy array."""
    raw = path.read_bytes()
    if len(raw) < 8:
        raise WeightsError(f"{path.name} is not a safetensors file")
    (header_len,) = struct.unpack("<Q", raw[:8])
    if header_len > len(raw) - 8:
        raise WeightsError(f"{path.name} is truncated")
    header = json.loads(raw[8 : 8 + header_len])
    body = memoryview(raw)[8 + header_len :]
    out: dict[str, npt.NDArray[Any]] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(spec["dtype"])
        if dtype is None:
            raise WeightsError(f"{path.name}: unsupported dtype {spec['dtype']} for {name}")
        start, end = spec["data_offsets"]
        shape = tuple(int(n) for n in spec["shape"])
        if end > len(body) or end - start != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
            raise WeightsError(f"{path.name}: bad byte range for {name}")
        out[name] = np.frombuffer(body[start:end], dtype=dtype).reshape(shape)
    return out
