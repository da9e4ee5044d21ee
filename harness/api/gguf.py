"""Reading GGUF files without loading them: the header (metadata and tensor table) checked against the
file's size, so a truncated or corrupt file is refused in one line; and a file's sha256.

Used by the export (to validate what it wrote) and by plugins (the ``gguf`` student names its model
from the header), so it is part of the public API (``lrl_harness.read_gguf_header``).
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from lrl_harness.api.errors import GGUFError

_GGUF_MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_BLOCKS = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
           10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
           24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 30: (1, 2)}
"""ggml type -> (elements per block, bytes per block), for the types an export can contain."""
_LIMIT = 1 << 31


class _Reader:
    def __init__(self, fh):
        self.fh = fh

    def take(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise EOFError
        return data

    def scalar(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.scalar("<Q")
        if n > _LIMIT:
            raise ValueError("string length out of range")
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, vtype: int):
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item_type, n = self.scalar("<I"), self.scalar("<Q")
            if n > _LIMIT:
                raise ValueError("array length out of range")
            return [self.value(item_type) for _ in range(n)]
        raise ValueError(f"unknown value type {vtype}")


def read_gguf_header(path: Path) -> dict:
    """Version, metadata and tensor table of a GGUF file, with the size its tensor data needs.

    Raises GGUFError for a missing file, a file that is not GGUF, or a header cut short.
    """
    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"{path}: no such GGUF file")
    with open(path, "rb") as fh:
        reader = _Reader(fh)
        try:
            magic = fh.read(4)
            if magic != _GGUF_MAGIC:
                raise GGUFError(f"{path}: not a GGUF file (starts with {magic!r}, expected {_GGUF_MAGIC!r})")
            version = reader.scalar("<I")
            if version not in (2, 3):
                raise GGUFError(f"{path}: unsupported GGUF version {version}")
            n_tensors, n_kv = reader.scalar("<Q"), reader.scalar("<Q")
            if n_tensors > _LIMIT or n_kv > _LIMIT:
                raise ValueError("counts out of range")
            metadata = {}
            for _ in range(n_kv):
                key = reader.string()
                metadata[key] = reader.value(reader.scalar("<I"))
            tensors = []
            for _ in range(n_tensors):
                tname = reader.string()
                dims = [reader.scalar("<Q") for _ in range(reader.scalar("<I"))]
                tensors.append({"name": tname, "dims": dims, "type": reader.scalar("<I"),
                                "offset": reader.scalar("<Q")})
            header_end = fh.tell()
        except EOFError:
            raise GGUFError(f"{path}: truncated GGUF (the file ends inside its header)") from None
        except (ValueError, UnicodeDecodeError, struct.error) as exc:
            raise GGUFError(f"{path}: corrupt GGUF header ({exc})") from None
    alignment = int(metadata.get("general.alignment", 32)) or 32
    data_start = -(-header_end // alignment) * alignment
    needed = data_start
    for t in tensors:
        if t["type"] not in _BLOCKS:
            needed = None
            break
        per_block, block_bytes = _BLOCKS[t["type"]]
        elements = 1
        for d in t["dims"]:
            elements *= d
        needed = max(needed, data_start + t["offset"] + elements // per_block * block_bytes)
    return {"version": version, "metadata": metadata, "tensors": tensors, "data_start": data_start,
            "bytes_needed": needed, "bytes": path.stat().st_size}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
