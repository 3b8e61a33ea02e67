"""What a store proves about itself: every chunk object present, its bytes those its checksum names and at
the place featurize recorded for them (chunk_crc32c, records_crc32c), every array's metadata and every
attribute the document featurize wrote (array_digests, attr_digests). `open_store` and `verify` (reader.py)
and featurize's plan (guard.py) ask these; docs/store-format.md, "What a store proves", is the rule."""

from __future__ import annotations

from speechcls.store.format import (
    FORMAT_VERSION,
    arrays_of,
    attr_problems,
    block_slots,
    chunk_checksum_ok,
    digest,
    rebuild_command,
    stored_crc32c,
)
from speechcls.store.location import (
    Location,
    members,
    read_bytes,
)


def chunk_objects(loc: Location) -> dict[str, dict[int, str]]:
    """{array: {chunk index: object key}} of the chunk objects under the store, from one listing. Every
    array is chunked along rows only, so a chunk is named by its first index."""
    held: dict[str, dict[int, str]] = {}
    for key in members(loc):
        parts = key.split("/")
        if len(parts) >= 3 and parts[1] == "c" and all(p.isdigit() for p in parts[2:]):
            held.setdefault(parts[0], {})[int(parts[2])] = key
    return held


def recorded_places(group) -> tuple[dict[str, int], set[str]]:
    """{chunk key: the CRC-32C featurize recorded for the object at that key}: each block's chunk_crc32c row
    (format.block_slots) and creation's records_crc32c. A checksum proves an object's bytes, the record
    proves they are the bytes of its place: a chunk moved or swapped to another key fails it. A record
    that cannot be read records nothing, and its key is returned second: an object that passes its checksum
    there but does not decode as a record is another array's chunk, out of place."""
    attrs = group.attrs
    records = attrs.get("records_crc32c")
    places = {str(k): v for k, v in records.items() if isinstance(v, int)} if isinstance(records, dict) else {}
    try:
        table, done = group["chunk_crc32c"], group["done"]
        per_block = attrs["block_rows"] // attrs["chunk_rows"]
        arrays = {name: group[name] for name in {name for name, _ in block_slots(0, per_block)}}
    except Exception:  # metadata gone or unreadable, a layout attribute edited: reported by structure_damage
        return places, set()
    rows = _decoded_chunks(table)
    # the done flags are no record's: all alike, they need none; one that does not decode is another's chunk
    flags = _decoded_chunks(done)
    unreadable = {f"done/{done.metadata.encode_chunk_key((b,))}" for b, f in enumerate(flags) if f is None}
    for b, row in enumerate(rows):
        # a record starts with its block's index: one moved to another block's key (swapped) is out of place
        if row is None or len(row) != 1 + len(block_slots(b, per_block)) or row[0] != b:
            unreadable.add(f"chunk_crc32c/{table.metadata.encode_chunk_key((b, 0))}")
            continue
        for (name, c), crc in zip(block_slots(b, per_block), row[1:].tolist()):
            if crc >= 0:
                a = arrays[name]
                places[f"{name}/{a.metadata.encode_chunk_key((c,) + (0,) * (a.ndim - 1))}"] = crc
    return places, unreadable


def _decoded_chunks(array) -> list:
    """Each row-chunk of a per-block array (one chunk a block) decoded, None where it cannot be (lost,
    failing its checksum: reported as such; or another array's bytes)."""
    try:
        return list(array[:])
    except Exception:  # one fails: read the others one by one
        rows = []
        for b in range(array.shape[0]):
            try:
                rows.append(array[b])
            except Exception:
                rows.append(None)
        return rows


def check_objects(loc: Location, group, held: dict) -> tuple[dict[str, list[str]], dict[str, list[str]], int, int]:
    """Read every chunk object in `held` (chunk_objects): ({array: keys failing their CRC-32C}, {array: keys
    whose CRC-32C is not the one recorded for their place}, objects read, bytes read)."""
    places, unreadable = recorded_places(group)
    failed, misplaced, checked, nbytes = {}, {}, 0, 0
    for name, objects in sorted(held.items()):
        for _, key in sorted(objects.items()):
            data = read_bytes(loc, key)
            checked, nbytes = checked + 1, nbytes + len(data)
            if not chunk_checksum_ok(data):
                failed.setdefault(name, []).append(key)
            elif key in unreadable or (key in places and stored_crc32c(data) != places[key]):
                misplaced.setdefault(name, []).append(key)
    return failed, misplaced, checked, nbytes


def lost_chunks(loc: Location, group, checksums: bool = True, held: dict | None = None) -> dict[str, list[int]]:
    """{array: [chunk index, ...]} of the chunks a written store should hold but lacks, or (with
    `checksums`, which reads every chunk object's bytes) holds with bytes that fail their CRC-32C or are not
    those recorded for their place. `held`: the store's chunk_objects when the caller has listed them."""
    held = chunk_objects(loc) if held is None else held
    bad_keys = set()
    if checksums:
        failed, misplaced, _, _ = check_objects(loc, group, held)
        bad_keys = {key for keys in (*failed.values(), *misplaced.values()) for key in keys}
    lost = {}
    for name, array in group.arrays():
        have = held.get(name, {})
        bad = set(range(array.nchunks)) - set(have)
        bad |= {c for c, key in have.items() if c < array.nchunks and key in bad_keys}
        if bad:
            lost[name] = sorted(bad)
    return lost


def damage_message(loc: Location, group, lost: dict[str, list[int]]) -> str:
    what = ", ".join(f"{name}: {len(c)} of {group[name].nchunks}" for name, c in sorted(lost.items()))
    return (
        f"{loc}: the store is marked complete but chunks are lost, fail their checksum or are out of place "
        f"({what}): a partial copy, files deleted, moved or damaged? Copy it again, or run the featurize command "
        f"again to recompute only the blocks that lost something: {rebuild_command(group.attrs)}"
    )


def structure_problems(loc: Location, group) -> list[str]:
    """What is wrong with a store's metadata and attributes, one phrase each (none for an intact store):
    arrays whose metadata is gone, unreadable or not the document featurize wrote (array_digests), and
    attributes edited, added or without their digest (format.attr_problems). Reads every array's zarr.json."""
    import json

    attrs = dict(group.attrs)
    version = attrs.get("format_version")
    recorded = attrs.get("array_digests") if isinstance(attrs.get("array_digests"), dict) else None
    if recorded is None and attrs.get("created") and version == FORMAT_VERSION:
        recorded = {}  # a created store of this format records them: none recorded is none proven
    missing, unreadable, edited = [], [], []
    for name in arrays_of(version):
        key = f"{name}/zarr.json"
        try:
            document = json.loads(read_bytes(loc, key))
        except FileNotFoundError:
            missing.append(name)
            continue
        except ValueError:  # not JSON, not UTF-8
            unreadable.append(key)
            continue
        if recorded is not None and recorded.get(name) != digest(document):
            edited.append(key)
    problems = []
    if missing:
        problems.append(f"the store lacks the metadata of {', '.join(missing)} (its zarr.json is gone)")
    if unreadable:
        problems.append(f"the metadata in {', '.join(unreadable)} is damaged (not valid JSON: a flipped byte?)")
    if edited:
        problems.append(
            f"the metadata in {', '.join(edited)} is not what featurize wrote (its digest in array_digests differs: "
            "a data type, shape, fill value or codec edited?)"
        )
    found = attr_problems(attrs)
    if found["edited"]:
        problems.append(
            f"the store's attributes {', '.join(found['edited'])} were edited since it was made, so they no longer "
            "describe its numbers"
        )
    if not isinstance(attrs.get("attr_digests"), dict):
        problems.append(
            f"the store's attr_digests are gone (removed or edited), which every format-{version} store records: "
            "what its attributes say is unproven"
        )
    elif found["unrecorded"]:
        problems.append(
            f"the store records no digest of its attributes {', '.join(found['unrecorded'])} (attr_digests removed "
            f"or edited), which every format-{version} store records: what they say is unproven"
        )
    if found["added"] and isinstance(attrs.get("attr_digests"), dict):
        problems.append(f"the store's attributes {', '.join(found['added'])} were not written by featurize")
    return problems


def structure_damage(loc: Location, group) -> str | None:
    """structure_problems as one message saying what to do, or None."""
    problems = structure_problems(loc, group)
    if not problems:
        return None
    return (
        f"{loc}: {'; '.join(problems)}. Its contents can no longer be trusted and a store cannot repair its own "
        f"metadata: make it anew with its featurize command and --overwrite: {rebuild_command(group.attrs)}"
    )
