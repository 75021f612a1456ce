"""Writing training shards (Parquet or WebDataset, media bytes inside) and streaming them back (docs/data.md).

How a build goes (:func:`build_shards`):

1. Every annotation file is parsed (:func:`~videotgb.data.sources.read_source`); a missing or unparseable file raises
   before anything is written. Records that cannot be used are skipped with a reason, never replaced.
2. The output folder is checked against the fingerprint of the inputs and settings in its ``manifest.json``: a folder
   built from other inputs or settings is refused unless ``overwrite``; one already complete is left as it is.
3. Media files are opened cheaply (:func:`~videotgb.data.sources.check_media`), in parallel over processes.
4. The shard count is fixed up front (:func:`plan_shards`) and the records, in order, are cut into that many
   contiguous shards of about equal bytes.
5. Each shard is written whole by one process to a hidden temporary name and renamed when complete; the manifest is
   updated after each. A rerun reuses every finished shard whose records are unchanged and writes the others.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import math
import multiprocessing
import os
import random
import re
import tarfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers.utils import logging

from .schema import KINDS, SCHEMA_VERSION, arrow_schema
from .sources import SKIP_REASONS, Entry, Skip, Source, check_media, file_sha256, read_source

logger = logging.get_logger(__name__)

MANIFEST_NAME = "manifest.json"
OUTPUT_FORMATS = {"parquet": "parquet", "webdataset": "tar"}
"""Output format → shard file extension."""
DEFAULT_SHARD_SIZE = "256MB"
ROW_GROUP_BYTES = 32 * 2**20
"""Parquet row groups hold about this many bytes: what a streaming reader keeps in memory at a time."""
MAX_LISTED_SKIPS = 10_000
"""The manifest lists at most this many skipped records (their counts are always complete)."""

_SHARD_FILE = re.compile(r"^shard-\d{5}-of-\d{5}\.(parquet|tar)$")
_TEMPORARY_FILE = re.compile(r"^\.shard-\d{5}-of-\d{5}\.(parquet|tar)\.tmp$")
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_CHECK_CHUNK = 32


class OutputFolderError(FileExistsError):
    """An output folder that may not be written: built from other inputs or settings, or holding foreign files."""


class MediaChangedError(OSError):
    """A media file that changed between its check and the writing of its shard."""


class SchemaVersionError(ValueError):
    """Shards written in another version of the record schema than this videotgb reads (`SCHEMA_VERSION`)."""


class DataDependencyError(ImportError):
    """`datasets` or `pyarrow` (the ``train`` extra) cannot be imported."""


def require_training_extra() -> None:
    """Raise :class:`DataDependencyError` naming ``pip install videotgb[train]`` unless `datasets` and `pyarrow`
    import."""
    for module in ("pyarrow", "datasets"):
        try:
            __import__(module)
        except ImportError as error:
            raise DataDependencyError(
                f"building shards needs {module}, which could not be imported ({error}); "
                "install it with `pip install videotgb[train]`"
            ) from None


def parse_size(text: str | int) -> int:
    """Bytes in a size such as ``"256MB"``, ``"1GB"``, ``"64MiB"`` or ``"1000"`` (KB/MB/GB are powers of 1000,
    KiB/MiB/GiB powers of 1024).

    >>> parse_size("256MB"), parse_size("1GiB"), parse_size("1.5kb"), parse_size(42)
    (256000000, 1073741824, 1500, 42)
    """
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
        if match is None or match.group(2).upper() not in _UNITS:
            raise ValueError(f"--shard-size {text!r}: expected a size such as 256MB, 1GB, 64MiB or a number of bytes")
        value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if value <= 0:
        raise ValueError(f"--shard-size {text!r}: must be positive")
    return value


def plan_shards(sizes: Sequence[int], shard_size: int, world_size: int = 1) -> list[tuple[int, int]]:
    """Cut records of these byte sizes, kept in order, into contiguous shards: ``[(start, end), ...]``.

    The count is fixed first: ``ceil(total / shard_size)`` rounded up to a multiple of `world_size` (so that every
    rank reads the same number of shards), but no more than the largest multiple of `world_size` that leaves each
    shard a record. Then each shard is filled greedily until it reaches its share of the bytes. A record is never
    split, so one larger than `shard_size` makes its shard larger.

    >>> plan_shards([10, 10, 10, 10, 10], shard_size=20)
    [(0, 2), (2, 3), (3, 5)]
    >>> plan_shards([10, 10, 10, 10, 10], shard_size=100, world_size=2)  # 1 shard, rounded up to 2
    [(0, 2), (2, 5)]
    >>> plan_shards([1, 1, 1], shard_size=1, world_size=2)  # 3 shards wanted: 2 leave each one a record
    [(0, 1), (1, 3)]
    """
    if world_size < 1:
        raise ValueError(f"--world-size {world_size}: must be at least 1")
    if len(sizes) < world_size:
        raise ValueError(
            f"only {len(sizes)} usable record(s) for world size {world_size}: every shard needs at least one record"
        )
    total = sum(sizes)
    count = max(1, math.ceil(total / shard_size))
    count = math.ceil(count / world_size) * world_size
    count = min(count, len(sizes) // world_size * world_size)
    bounds, start, filled = [], 0, 0
    for shard in range(count - 1):
        target = total * (shard + 1) / count
        end = start + 1
        filled += sizes[start]
        last_end = len(sizes) - (count - 1 - shard)  # leave a record for each shard still to fill
        while end < last_end and filled + sizes[end] / 2 < target:
            filled += sizes[end]
            end += 1
        bounds.append((start, end))
        start = end
    bounds.append((start, len(sizes)))
    return bounds


@dataclass(frozen=True)
class ShardTask:
    """What one process needs to write one shard: where, in which format, which records, and the key of the first
    (WebDataset keys are record positions in the whole build)."""

    folder: str
    name: str
    format: str
    entries: tuple[Entry, ...]
    first_key: int


def shard_name(index: int, count: int, format_out: str) -> str:
    """``shard-00003-of-00008.parquet``."""
    return f"shard-{index:05d}-of-{count:05d}.{OUTPUT_FORMATS[format_out]}"


def write_shard(task: ShardTask) -> dict[str, Any]:
    """Write one whole shard to a hidden temporary file and rename it into place; its manifest entry."""
    folder = Path(task.folder)
    temporary = folder / f".{task.name}.tmp"
    try:
        if task.format == "parquet":
            _write_parquet(task.entries, temporary)
        else:
            _write_webdataset(task.entries, temporary, task.first_key)
        os.replace(temporary, folder / task.name)
    finally:
        temporary.unlink(missing_ok=True)
    return {
        "name": task.name,
        "records": len(task.entries),
        "bytes": (folder / task.name).stat().st_size,
        "sha256": file_sha256(folder / task.name),
        "content": content_hash(task.entries),
        "complete": True,
    }


def content_hash(entries: Iterable[Entry]) -> str:
    """What identifies a shard's records: their ids, kinds and media sizes, in order."""
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(f"{entry.id}\t{entry.kind}\t{entry.media_name}\t{entry.media_size}\n".encode())
    return digest.hexdigest()


def _media_bytes(entry: Entry) -> bytes | None:
    if entry.media_path is None:
        return None
    data = Path(entry.media_path).read_bytes()
    if len(data) != entry.media_size:
        raise MediaChangedError(
            f"{entry.media_path} (record {entry.id}) changed size while the shards were built "
            f"({entry.media_size} → {len(data)} bytes); run the build again"
        )
    return data


def _row(entry: Entry, media: bytes | None) -> dict[str, Any]:
    return {
        "id": entry.id,
        "source": entry.source,
        "kind": entry.kind,
        "question": entry.question,
        "answer": entry.answer,
        "conversation": entry.conversation,
        "media": media,
        "media_name": entry.media_name,
        "schema_version": SCHEMA_VERSION,
    }


def _write_parquet(entries: Sequence[Entry], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema()
    text_columns = [name for name in schema.names if name != "media"]
    with pq.ParquetWriter(
        path,
        schema,
        compression={name: "zstd" for name in text_columns} | {"media": "none"},
        use_dictionary=["source", "kind"],
        write_statistics=["source", "kind", "schema_version"],  # no min/max copies of media bytes
    ) as writer:
        rows, filled = [], 0
        for entry in entries:
            rows.append(_row(entry, _media_bytes(entry)))
            filled += entry.record_bytes()
            if filled >= ROW_GROUP_BYTES:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema), row_group_size=len(rows))
                rows, filled = [], 0
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema), row_group_size=len(rows))


def _write_webdataset(entries: Sequence[Entry], path: Path, first_key: int) -> None:
    """One sample per record: ``<key>.json`` (every field but media) and ``<key>.media`` (the bytes; empty for text,
    so that every sample has the same members). Fixed owners and times keep the file deterministic."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
        for offset, entry in enumerate(entries):
            key = f"{first_key + offset:09d}"
            media = _media_bytes(entry)
            fields = _row(entry, None)
            del fields["media"]
            for member, data in (
                (f"{key}.json", json.dumps(fields, ensure_ascii=False).encode()),
                (f"{key}.media", media or b""),
            ):
                info = tarfile.TarInfo(member)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                archive.addfile(info, io.BytesIO(data))


def _check_chunk(entries: Sequence[Entry]) -> list[Skip | None]:
    return [check_media(entry) for entry in entries]


def _pool_context():
    # fork starts workers in milliseconds with the package already imported (spawn would import torch again in each);
    # the workers only read files and call PyAV, PIL and pyarrow.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _progress(total: int, description: str, enabled: bool, **kwargs):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, disable=not enabled, leave=False, **kwargs)


def _settings(sources: Sequence[Source], shard_size: int, world_size: int, seed: int | None, format_out: str):
    return {
        "sources": [
            {
                "name": source.name,
                "format": source.format,
                "annotations": str(source.annotations),
                "annotations_sha256": file_sha256(source.annotations),
                "media_root": None if source.media_root is None else str(source.media_root.resolve()),
            }
            for source in sources
        ],
        "shard_size": shard_size,
        "world_size": world_size,
        "seed": seed,
        "format": format_out,
        "schema_version": SCHEMA_VERSION,
    }


def _fingerprint(settings: dict[str, Any]) -> str:
    # The annotation files count by content, not by path: moving them does not invalidate a build.
    identity = dict(
        settings, sources=[{k: v for k, v in s.items() if k != "annotations"} for s in settings["sources"]]
    )
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    changed = [key for key in new if key != "sources" and old.get(key) != new[key]]
    described = [f"{key} {old.get(key)!r} → {new[key]!r}" for key in changed]
    if old.get("sources") != new["sources"]:
        described.insert(0, "the sources (annotation files, their content, formats, names or media roots)")
    return ", ".join(described) or "the settings"


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``manifest.json`` of a shard folder: a local path or an fsspec URL (``hf://datasets/...``, ``s3://...``)."""
    import fsspec

    location = str(folder).rstrip("/")
    with fsspec.open(f"{location}/{MANIFEST_NAME}", "r", encoding="utf-8") as file:
        return json.load(file)


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    temporary = folder / f".{MANIFEST_NAME}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, folder / MANIFEST_NAME)


def _remove_build_files(folder: Path, keep: set[str] = frozenset()) -> None:
    for path in folder.iterdir():
        if path.name not in keep and (_SHARD_FILE.match(path.name) or _TEMPORARY_FILE.match(path.name)):
            path.unlink()


def _prepare_output(folder: Path, settings: dict[str, Any], fingerprint: str, overwrite: bool) -> dict | None:
    """The previous manifest of the same build (to resume), or None for a fresh start; refuses a foreign folder."""
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"--output {folder}: is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / MANIFEST_NAME
    previous = None
    if manifest_path.is_file():
        try:
            previous = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = {}
    if overwrite:
        _remove_build_files(folder)
        manifest_path.unlink(missing_ok=True)
        return None
    if previous is None:
        if any(folder.iterdir()):
            raise OutputFolderError(
                f"--output {folder}: the folder holds files but no {MANIFEST_NAME}; choose an empty or new folder, "
                "or pass --overwrite"
            )
        return None
    if previous.get("fingerprint") != fingerprint:
        raise OutputFolderError(
            f"--output {folder}: holds shards built from other inputs or settings "
            f"({_differences(previous.get('settings') or {}, settings)}); pass --overwrite to replace them"
        )
    return previous


def _finished(folder: Path, shard: dict[str, Any]) -> bool:
    path = folder / shard["name"]
    return bool(shard.get("complete")) and path.is_file() and path.stat().st_size == shard.get("bytes")


def build_shards(
    sources: Sequence[Source],
    output: str | os.PathLike,
    *,
    shard_size: int | str = DEFAULT_SHARD_SIZE,
    world_size: int = 1,
    seed: int | None = None,
    format_out: str = "parquet",
    num_workers: int = 1,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Build (or finish building) the shards of `sources` in `output` and return its manifest.

    Args:
        sources: annotation files with their formats, names and media roots; names must be unique.
        output: the shard folder (created if absent). A folder built from other inputs or settings is refused
            unless `overwrite`; one built from the same ones is resumed (finished shards are kept).
        shard_size: bytes per shard (``"256MB"``, ``"1GB"``, an int), before rounding the count to `world_size`.
        world_size: the shard count is a multiple of this (each training rank reads the same number of shards).
        seed: shuffle the records with this seed; None keeps them in order (sources in the order given, records in
            file order).
        format_out: ``"parquet"`` or ``"webdataset"``.
        num_workers: processes that check media and write shards (1: all in this process).
        overwrite: remove the shards and manifest of a previous build first.
        progress: show tqdm progress bars.

    Raises:
        AnnotationsError: an annotation file is missing or not JSON.
        OutputFolderError: `output` holds another build or foreign files and `overwrite` is False.
        ValueError: bad settings, or fewer usable records than `world_size`.
    """
    sources = list(sources)
    require_training_extra()
    if format_out not in OUTPUT_FORMATS:
        raise ValueError(f"--format-out {format_out!r}: expected one of {', '.join(OUTPUT_FORMATS)}")
    if num_workers < 1:
        raise ValueError(f"--num-workers {num_workers}: must be at least 1")
    if world_size < 1:
        raise ValueError(f"--world-size {world_size}: must be at least 1")
    shard_bytes = parse_size(shard_size)
    names = Counter(source.name for source in sources)
    if not sources or any(count > 1 for count in names.values()):
        repeated = [name for name, count in names.items() if count > 1]
        raise ValueError(
            f"source names must be unique, {', '.join(repeated)} repeats; name them with NAME:FORMAT=PATH"
            if sources
            else "no source given"
        )
    for source in sources:
        if source.media_root is not None and not source.media_root.is_dir():
            raise FileNotFoundError(f"--media-root {source.media_root}: no such folder (source {source.name})")

    parsed = [read_source(source) for source in sources]
    settings = _settings(sources, shard_bytes, world_size, seed, format_out)
    fingerprint = _fingerprint(settings)
    folder = Path(output)
    previous = _prepare_output(folder, settings, fingerprint, overwrite)
    if previous and previous.get("complete") and all(_finished(folder, s) for s in previous.get("shards", [])):
        logger.warning(f"{folder}: already complete with these inputs and settings; nothing written")
        return previous

    entries = [entry for source_entries, _ in parsed for entry in source_entries]
    skips = [skip for _, source_skips in parsed for skip in source_skips]
    pool = None
    if num_workers > 1:
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=num_workers, mp_context=_pool_context())
        pool.submit(int).result()  # fork every worker now, before progress bars start threads in this process
    try:
        checked = _check_all(entries, pool, progress)
        skips += [skip for skip in checked if skip is not None]
        entries = [entry for entry, skip in zip(entries, checked, strict=True) if skip is None]
        if seed is not None:
            random.Random(seed).shuffle(entries)
        bounds = plan_shards([entry.record_bytes() for entry in entries], shard_bytes, world_size)
        tasks = [
            ShardTask(
                str(folder), shard_name(index, len(bounds), format_out), format_out, tuple(entries[start:end]), start
            )
            for index, (start, end) in enumerate(bounds)
        ]
        manifest = _manifest(settings, fingerprint, sources, parsed, entries, skips)
        reusable = {shard["name"]: shard for shard in (previous or {}).get("shards", []) if _finished(folder, shard)}
        shards: list[dict[str, Any]] = []
        pending = []
        for task in tasks:
            old = reusable.get(task.name)
            if old is not None and old.get("content") == content_hash(task.entries):
                shards.append(old)
            else:
                shards.append({"name": task.name, "records": len(task.entries), "complete": False})
                pending.append(task)
        manifest["shards"] = shards
        _remove_build_files(folder, keep={shard["name"] for shard in shards if shard["complete"]})
        _write_manifest(folder, manifest)
        _summarise_skips(skips, len(entries) + len(skips))
        _write_all(folder, manifest, tasks, pending, pool, progress)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    manifest["complete"] = True
    manifest["bytes"] = sum(shard["bytes"] for shard in manifest["shards"])
    _write_manifest(folder, manifest)
    return manifest


def _check_all(entries: list[Entry], pool, progress: bool) -> list[Skip | None]:
    chunks = [entries[start : start + _CHECK_CHUNK] for start in range(0, len(entries), _CHECK_CHUNK)]
    results: list[Skip | None] = []
    with _progress(len(entries), "checking media", progress, unit="record") as bar:
        for checked in pool.map(_check_chunk, chunks) if pool is not None else map(_check_chunk, chunks):
            results += checked
            bar.update(len(checked))
    return results


def _task_bytes(task: ShardTask) -> int:
    return sum(entry.record_bytes() for entry in task.entries)


def _write_all(folder: Path, manifest: dict, tasks: list[ShardTask], pending: list[ShardTask], pool, progress) -> None:
    position = {task.name: index for index, task in enumerate(tasks)}
    planned = sum(_task_bytes(task) for task in pending)

    def record(result: dict[str, Any]) -> None:
        manifest["shards"][position[result["name"]]] = result
        _write_manifest(folder, manifest)

    with _progress(planned, "writing shards", progress, unit="B", unit_scale=True) as bar:
        if pool is None:
            for task in pending:
                record(write_shard(task))
                bar.update(_task_bytes(task))
            return
        futures = {pool.submit(write_shard, task): task for task in pending}
        failure = None
        for future in concurrent.futures.as_completed(futures):
            if future.cancelled():
                continue
            try:
                record(future.result())
            except BaseException as error:  # keep the shards that finished, stop the others, then re-raise
                failure = failure or error
                for other in futures:
                    other.cancel()
                continue
            bar.update(_task_bytes(futures[future]))
        if failure is not None:
            raise failure


def _manifest(settings, fingerprint, sources, parsed, entries, skips) -> dict[str, Any]:
    from .. import __version__

    written = Counter(entry.source for entry in entries)
    skipped = Counter(skip.source for skip in skips)
    reasons = Counter(skip.reason for skip in skips)
    kinds = Counter(entry.kind for entry in entries)
    return {
        "schema_version": SCHEMA_VERSION,
        "format": settings["format"],
        "complete": False,
        "fingerprint": fingerprint,
        "created_by": f"videotgb {__version__}",
        "settings": settings,
        "records": len(entries),
        "bytes": None,
        "sources": {
            source.name: {
                "format": source.format,
                "entries": len(source_entries) + len(source_skips),
                "records": written[source.name],
                "skipped": skipped[source.name],
            }
            for source, (source_entries, source_skips) in zip(sources, parsed, strict=True)
        },
        "kinds": {kind: kinds[kind] for kind in KINDS},
        "skipped": {
            "total": len(skips),
            "reasons": {reason: reasons[reason] for reason in SKIP_REASONS},
            "listed": len(skips[:MAX_LISTED_SKIPS]),
            "records": [
                {"id": skip.id, "reason": skip.reason, "detail": skip.detail} for skip in skips[:MAX_LISTED_SKIPS]
            ],
        },
        "shards": [],
    }


def _summarise_skips(skips: list[Skip], total: int) -> None:
    if skips:
        reasons = Counter(skip.reason for skip in skips)
        counts = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        logger.warning(f"skipped {len(skips)} of {total} records ({counts}); {MANIFEST_NAME} lists them by id")


def webdataset_features():
    """The `datasets.Features` of a WebDataset shard as `load_dataset("webdataset", ...)` reads it: ``json`` (every
    field but media) and ``media`` (bytes). Passing them skips datasets' type inference from the first samples."""
    from datasets import Features, Value

    fields = Features.from_arrow_schema(arrow_schema())
    return Features({"json": Features({k: v for k, v in fields.items() if k != "media"}), "media": Value("binary")})


def _from_webdataset(sample: dict[str, Any]) -> dict[str, Any]:
    return {**sample["json"], "media": sample["media"] or None}


def check_schema_version(location: str | os.PathLike, version: int | None) -> None:
    """Raise SchemaVersionError naming `location` unless `version` is None (not recorded) or `SCHEMA_VERSION`."""
    if version is not None and int(version) != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{location}: shards of record schema version {version}, but this videotgb reads version "
            f"{SCHEMA_VERSION}; rebuild them with `videotgb data build --overwrite`"
        )


def shard_schema_version(path: str, file_format: str = "parquet") -> int | None:
    """The record schema version of one shard file (local path or fsspec URL), None when it records none (files
    not written by `videotgb data build`). Parquet: the schema metadata, else the first row's `schema_version`
    column; WebDataset: the first sample's JSON. Reads the footer or the first members only."""
    import fsspec

    with fsspec.open(path, "rb") as file:
        if file_format == "parquet":
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(file)
            recorded = (parquet.schema_arrow.metadata or {}).get(b"videotgb_schema_version")
            if recorded is not None:
                return int(recorded)
            if "schema_version" not in parquet.schema_arrow.names or parquet.metadata.num_rows == 0:
                return None
            first = parquet.read_row_group(0, columns=["schema_version"]).column(0)[0].as_py()
            return None if first is None else int(first)
        with tarfile.open(fileobj=file, mode="r|") as archive:
            for member in archive:
                if member.name.endswith(".json"):
                    return json.load(archive.extractfile(member)).get("schema_version")
    return None


def read_build_manifest(location: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a complete build in this package's record schema; ValueError naming `location` when the build
    is incomplete, SchemaVersionError when it is of another record schema version."""
    manifest = read_manifest(location)
    if not manifest.get("complete"):
        raise ValueError(f"{location}: the build is not complete; run `videotgb data build` again to finish it")
    check_schema_version(location, manifest.get("schema_version"))
    return manifest


def shard_files(location: str | os.PathLike) -> tuple[list[str], str]:
    """The shard files of a complete build (local folder or fsspec URL) and their format, from its manifest.
    SchemaVersionError when the build is of another record schema version."""
    manifest = read_build_manifest(location)
    base = str(location).rstrip("/")
    return [f"{base}/{shard['name']}" for shard in manifest["shards"]], manifest["format"]


def load_shard_files(
    files: Sequence[str],
    file_format: str = "parquet",
    *,
    streaming: bool = True,
    split: str = "train",
    strict_schema: bool = True,
    **kwargs,
):
    """Shard files of one format (local paths or fsspec URLs) as a `datasets` dataset of records.

    With `strict_schema` the records must have exactly the shard schema; without it, Parquet columns are read as
    they are, so that files with extra columns (fields joined from side shards, such as `span_targets`) load too.
    """
    from datasets import Features, load_dataset

    if file_format not in OUTPUT_FORMATS:
        raise ValueError(f"shard format must be one of {sorted(OUTPUT_FORMATS)}, got {file_format!r}")
    if not files:
        raise ValueError("no shard files given")
    data_files = {split: list(files)}
    features = Features.from_arrow_schema(arrow_schema())
    if file_format == "parquet":
        return load_dataset(
            "parquet",
            data_files=data_files,
            split=split,
            streaming=streaming,
            features=features if strict_schema else None,
            **kwargs,
        )
    dataset = load_dataset(
        "webdataset", data_files=data_files, split=split, streaming=streaming, features=webdataset_features(), **kwargs
    )
    return dataset.map(
        _from_webdataset, remove_columns=list(dataset.column_names or ["json", "media"]), features=features
    )


def read_shard_file(path: str, file_format: str = "parquet") -> Iterable[dict[str, Any]]:
    """The records of one shard file (local path or fsspec URL), in order, read in this process.

    `load_shard_files` is the reader for training streams; this one serves code that runs inside a data-loader worker
    and must read one whole shard there (`datasets` would split its files among the workers again), such as the join
    of side shards to their media shard.
    """
    import fsspec

    if file_format not in OUTPUT_FORMATS:
        raise ValueError(f"shard format must be one of {sorted(OUTPUT_FORMATS)}, got {file_format!r}")
    with fsspec.open(path, "rb") as handle:
        if file_format == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(handle).iter_batches(batch_size=8):
                yield from batch.to_pylist()
            return
        fields: dict[str, Any] = {}
        with tarfile.open(fileobj=handle, mode="r|") as archive:
            for member in archive:
                data = archive.extractfile(member).read()
                if member.name.endswith(".json"):
                    fields = json.loads(data)
                else:
                    yield _from_webdataset({"json": fields, "media": data})


def load_shards(location: str | os.PathLike, *, streaming: bool = True, split: str = "train", **kwargs):
    """The records of a complete build as a `datasets` dataset in the shard schema, whatever the output format.

    `location` is the shard folder: a local path or an fsspec URL such as ``hf://datasets/<user>/<repo>/shards``.
    Extra keyword arguments go to `datasets.load_dataset`. Media stay bytes (decode videos with
    `videotgb.video_io.read_video(record["media"])`).
    """
    files, file_format = shard_files(location)
    return load_shard_files(files, file_format, streaming=streaming, split=split, **kwargs)
