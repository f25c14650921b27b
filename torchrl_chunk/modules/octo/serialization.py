"""Flax msgpack (de)serialisation with only ``msgpack`` and ``numpy`` (spec 2.2-2.3).

Octo's parameters are stored as one Orbax "aggregate" file, ``<step>/default/checkpoint``:
a msgpack map of nested string-keyed maps whose array leaves are msgpack extension values
of type 1, each holding the msgpack triple ``(shape, dtype name, C-order bytes)``. This is
``flax.serialization``'s scheme; we read and write it without importing JAX or Flax.
Arrays above 1 GiB are stored by Flax as ``{"__msgpack_chunked_array__": True, ...}``;
both directions handle that too.

:func:`read_msgpack_file` turns every way a file can be unreadable (truncated, not msgpack,
a corrupt array payload, bfloat16) into a one-line
:class:`~torchrl_chunk.modules.octo.errors.OctoCheckpointError` naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from torchrl_chunk.modules.octo.errors import OctoCheckpointError

PLACEHOLDER_PREFIX = "PLACEHOLDER://"
_EXT_NDARRAY, _EXT_COMPLEX, _EXT_NPSCALAR = 1, 2, 3
_MAX_CHUNK_BYTES = 2**30


def _msgpack():
    try:
        import msgpack
    except ImportError as err:  # pragma: no cover - msgpack is in the test and octo extras
        raise ImportError(
            "reading/writing Octo checkpoints needs `msgpack`: pip install msgpack "
            "(or install torchrl_chunk with the [octo] extra)."
        ) from err
    return msgpack


def _array_from_payload(data: bytes) -> np.ndarray:
    msgpack = _msgpack()
    shape, dtype_name, buffer = msgpack.unpackb(data, raw=True)
    name = dtype_name.decode() if isinstance(dtype_name, bytes) else dtype_name
    if name == "bfloat16":
        raise OctoCheckpointError(
            "the data stores bfloat16 arrays; convert it to float32 with flax first "
            "(jax.tree.map(lambda x: x.astype('float32'), params))."
        )
    return np.frombuffer(buffer, dtype=np.dtype(name)).reshape(shape)


def _ext_hook(code: int, data: bytes) -> Any:
    msgpack = _msgpack()
    if code == _EXT_NDARRAY:
        return _array_from_payload(data)
    if code == _EXT_NPSCALAR:
        return _array_from_payload(data)[()]
    if code == _EXT_COMPLEX:
        re, im = msgpack.unpackb(data)
        return complex(re, im)
    return msgpack.ExtType(code, data)


def _unchunk(tree: Any) -> Any:
    if isinstance(tree, dict):
        if tree.get("__msgpack_chunked_array__"):
            shape = tuple(tree["shape"][str(i)] for i in range(len(tree["shape"])))
            chunks = [tree["chunks"][str(i)] for i in range(len(tree["chunks"]))]
            return np.concatenate(chunks).reshape(shape)
        return {k: _unchunk(v) for k, v in tree.items()}
    return tree


def msgpack_restore(data: bytes) -> dict[str, Any]:
    """Bytes in Flax msgpack format -> nested dict of numpy arrays (read-only views)."""
    msgpack = _msgpack()
    tree = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    return _unchunk(tree)


def _pack_default(obj: Any) -> Any:
    msgpack = _msgpack()
    if isinstance(obj, np.generic):
        arr = np.asarray(obj)
        payload = msgpack.packb((arr.shape, arr.dtype.name, arr.tobytes("C")), use_bin_type=True)
        return msgpack.ExtType(_EXT_NPSCALAR, payload)
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError("object arrays cannot be stored in a Flax msgpack file.")
        payload = msgpack.packb((obj.shape, obj.dtype.name, obj.tobytes("C")), use_bin_type=True)
        return msgpack.ExtType(_EXT_NDARRAY, payload)
    if isinstance(obj, complex):
        return msgpack.ExtType(_EXT_COMPLEX, msgpack.packb((obj.real, obj.imag)))
    raise TypeError(f"cannot store {type(obj).__name__} in a Flax msgpack file.")


def _chunk(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {str(k): _chunk(v) for k, v in tree.items()}
    if isinstance(tree, np.ndarray) and tree.nbytes > _MAX_CHUNK_BYTES:
        step = max(1, _MAX_CHUNK_BYTES // tree.dtype.itemsize)
        flat = tree.reshape(-1)
        return {
            "__msgpack_chunked_array__": True,
            "shape": {str(i): s for i, s in enumerate(tree.shape)},
            "chunks": {
                str(i): flat[j : j + step] for i, j in enumerate(range(0, flat.size, step))
            },
        }
    return tree


def msgpack_serialize(tree: Mapping[str, Any]) -> bytes:
    """Nested dict of numpy arrays -> bytes in Flax msgpack format."""
    return _msgpack().packb(_chunk(tree), default=_pack_default, use_bin_type=True)


def read_msgpack_file(path: str | Path) -> dict[str, Any]:
    """:func:`msgpack_restore` of a file; one-line errors naming the file otherwise."""
    try:
        return msgpack_restore(Path(path).read_bytes())
    except OctoCheckpointError as err:
        raise OctoCheckpointError(f"{path}: {err}") from err
    except OSError as err:
        raise OctoCheckpointError(f"{path} cannot be read ({err.strerror or err}).") from err
    except (ValueError, TypeError, KeyError, IndexError) as err:
        # msgpack: "Unpack failed: incomplete input" (truncated), ExtraData (not msgpack);
        # numpy: an array payload whose bytes do not fill its shape.
        raise OctoCheckpointError(
            f"{path} is not a complete Flax msgpack file ({type(err).__name__}: {err}): the "
            "download was cut short or the file is something else; download it again."
        ) from err


def write_msgpack_file(path: str | Path, tree: Mapping[str, Any]) -> None:
    Path(path).write_bytes(msgpack_serialize(tree))


def flatten_tree(tree: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """``{"a": {"b": x}}`` -> ``{"a/b": x}`` (keys converted to str, as Flax stores them)."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{sep}{k}" if prefix else str(k))
        else:
            flat[prefix] = node

    walk(tree, "")
    return flat


def unflatten_tree(flat: Mapping[str, Any], sep: str = "/") -> dict[str, Any]:
    """Inverse of :func:`flatten_tree`."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split(sep)
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree
