"""The key table's binary forms, written independently of the Rust encoder from the layout in
filters/tollgate-contract/src/keytable/ (shard.rs, wire.rs), for tests that put a key table in
a host's shared data the way the service VM does, and for the fuzz seeds."""

from __future__ import annotations

import hashlib
import struct
from typing import Iterable, Optional, Sequence

SHARDS = 256
VERSION_KEY = "tollgate.keys.v1"
MANIFEST_KEY = "tollgate.keys.v1.manifest"


def shard_key(i: int) -> str:
    return f"tollgate.keys.v1.shard.{i:03d}"


def digest_bytes(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def encode_shard(index: int, epoch: int, version: int, entries: Iterable[dict]) -> bytes:
    """`entries`: dicts with `digest` (32 bytes), `id`, optional `role` ("admin"),
    `expires_at` (int or None) and `models` (list or None: every model)."""
    entries = sorted(entries, key=lambda e: e["digest"])
    sets: list[Optional[tuple]] = []
    set_bytes = b""
    ids = b""
    records = b""
    for e in entries:
        assert e["digest"][0] == index, "digest of another shard"
        models = None if e.get("models") is None else tuple(e["models"])
        if models not in sets:
            if models is None:
                set_bytes += struct.pack("<BH", 0, 0)
            else:
                set_bytes += struct.pack("<BH", 1, len(models))
                for m in models:
                    raw = m.encode()
                    set_bytes += struct.pack("<H", len(raw)) + raw
            sets.append(models)
        set_index = sets.index(models)
        flags = (1 if e.get("role") == "admin" else 0) | (2 if e.get("expires_at") is not None else 0)
        raw_id = e["id"].encode()
        id_offset = len(ids)
        ids += bytes([len(raw_id)]) + raw_id
        records += e["digest"] + struct.pack("<QB", e.get("expires_at") or 0, flags)
        records += struct.pack("<I", set_index)[:3] + struct.pack("<I", id_offset)
    sets_area = struct.pack("<I", len(sets)) + set_bytes
    header = b"TGKS" + bytes([1, index, 0, 0]) + struct.pack("<QQIII", epoch, version, len(entries), len(sets_area), len(ids))
    return header + records + sets_area + ids


def encode_manifest(versions: Sequence[tuple[int, int]]) -> bytes:
    assert len(versions) == SHARDS
    return b"TGKM" + bytes([1, 0, 0, 0]) + b"".join(struct.pack("<QQ", e, v) for e, v in versions)


def decode_manifest(data: bytes) -> list[tuple[int, int]]:
    assert data[:5] == b"TGKM\x01" and len(data) == 8 + 16 * SHARDS, data[:8]
    return [struct.unpack_from("<QQ", data, 8 + 16 * i) for i in range(SHARDS)]


def encode_update(shards: Sequence[bytes]) -> bytes:
    return b"TGKU" + bytes([1, 0, 0, 0]) + struct.pack("<I", len(shards)) + b"".join(
        struct.pack("<I", len(s)) + s for s in shards)


def table(keys: Sequence[dict], epoch: int = 1, version: int = 1) -> dict[int, bytes]:
    """Every shard of a table of `keys` (each with `secret` or `digest`)."""
    by_shard: dict[int, list[dict]] = {i: [] for i in range(SHARDS)}
    for k in keys:
        k = dict(k)
        if "digest" not in k:
            k["digest"] = digest_bytes(k.pop("secret"))
        elif isinstance(k["digest"], str):
            k["digest"] = bytes.fromhex(k["digest"])
        by_shard[k["digest"][0]].append(k)
    return {i: encode_shard(i, epoch, version, entries) for i, entries in by_shard.items()}


def publish(shared_data, shards: dict[int, bytes], epoch: int = 1, version: int = 1,
            manifest: Optional[list[tuple[int, int]]] = None) -> list[tuple[int, int]]:
    """Writes `shards` into a harness `SharedData` as the service VM does (shards, then the
    manifest, then the version key); returns the manifest."""
    if manifest is None:
        current = shared_data.get(MANIFEST_KEY)
        manifest = decode_manifest(current[0]) if current else [(0, 0)] * SHARDS
    manifest = list(manifest)
    for i, raw in shards.items():
        shared_data.set(shard_key(i), raw, 0)
        e, v = struct.unpack_from("<QQ", raw, 8)
        manifest[i] = (e, v)
    shared_data.set(MANIFEST_KEY, encode_manifest(manifest), 0)
    shared_data.set(VERSION_KEY, b"", 0)  # empty: only its CAS is read
    return manifest
