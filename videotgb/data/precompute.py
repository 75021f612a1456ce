"""Side shards: what is computed once per video record of a shard build and joined to its records on ``id`` when
training (docs/data.md#side-shards).

`videotgb data flow` stores each video's candidate-frame indices, flow-frame indices and optical flow
(:class:`FlowComputer`); `videotgb data pseudo-spans` stores each video's pseudo span, made with a model
(:class:`PseudoSpanComputer`). Both compute from the media exactly as training does online: the processor's
``load_video`` reads the frames, ``video_flow`` computes the flow, `videotgb.pseudo_spans` makes the spans.

A side folder holds one Parquet side shard per media shard, with the same index and count
(``side-00003-of-00008.parquet`` goes with ``shard-00003-of-00008.parquet``), so that the training ranks that read a
media shard read its side shard too. A side shard has an ``id`` column and the new columns, one row per video record
that gave a value, in the media shard's order; image and text records have no row, nor have videos that do not
decode (skipped: counted and listed by id, never fatal).

How a run goes (:func:`precompute_side_shards`):

1. The media build's manifest is read: it must be complete and of this package's record schema version.
2. The side folder's ``manifest.json`` says what made it: the kind, the settings (the processor's frame and flow
   settings, the flow dtype or the model) and the media build's fingerprint. A folder made otherwise is refused unless
   ``overwrite``.
3. Process ``rank`` of ``world_size`` (torchrun's ``RANK`` and ``WORLD_SIZE``) computes the side shards ``i`` with
   ``i % world_size == rank`` that are not finished; no process group is needed.
4. Each side shard is written to a hidden temporary file and renamed into place when complete; its Parquet footer
   holds its counts and skipped ids, so a finished side shard is recognised by any process and a rerun skips it.
   The process that finds every side shard finished writes the complete manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import logging

from .shards import MANIFEST_NAME, MAX_LISTED_SKIPS, ROW_GROUP_BYTES, OutputFolderError, read_build_manifest
from .sources import file_sha256

logger = logging.get_logger(__name__)

SIDE_VERSION = 1
"""Stored in every side manifest and side-shard footer; raised whenever the side-shard layout changes."""
SIDE_KINDS = ("flow", "pseudo_spans")
FLOW_DTYPES = ("float16", "uint8")
UINT8_ZERO = 128
"""The uint8 code of a zero flow: a value ``q`` stands for ``(q - 128) * flow_scale``."""
SIDE_SKIP_REASONS = ("missing_video", "undecodable_video")
SIDE_COLUMNS = {
    "flow": ("candidate_indices", "flow_indices", "flow", "flow_scale"),
    "pseudo_spans": ("span_targets",),
}
"""The columns each kind of side shard adds to the records, besides ``id``."""

_FOOTER_KEY = "videotgb_side"
_SIDE_FILE = re.compile(r"^side-(\d{5})-of-(\d{5})\.parquet$")
_SIDE_TEMPORARY = re.compile(r"^\.side-(\d{5})-of-(\d{5})\.parquet\.tmp$")


class SideShardError(ValueError):
    """Side shards that cannot be joined to the media shards: made from another build or other settings, missing,
    incomplete, or holding ids that the media shard does not have in that order."""


def side_shard_name(index: int, count: int) -> str:
    """``side-00003-of-00008.parquet``, the side shard of ``shard-00003-of-00008.*``."""
    return f"side-{index:05d}-of-{count:05d}.parquet"


# ---- flow encoding ------------------------------------------------------------------------------------------------


def flow_bytes_per_video(steps: int, size: int, flow_dtype: str) -> int:
    """Bytes of one video's stored flow, before Parquet's compression: ``steps x 2 x size x size`` values.

    >>> flow_bytes_per_video(64, 224, "float16"), flow_bytes_per_video(64, 224, "uint8")
    (12845056, 6422528)
    """
    return steps * 2 * size * size * (2 if flow_dtype == "float16" else 1)


def encode_flow(flow: torch.Tensor, flow_dtype: str) -> tuple[bytes, float | None]:
    """One video's `(L, 2, S, S)` flow as bytes and a scale, for :func:`decode_flow`.

    - ``float16``: the values as little-endian float16; no scale (``None``).
    - ``uint8``: ``q = clip(round(x / scale), -127, 127) + 128`` with the per-video ``scale = max|x| / 127`` (1 for an
      all-zero flow), so that zero stays exactly zero and each value comes back within ``scale / 2``.

    >>> flow = torch.tensor([0.5, -1.0, 0.0, 0.25]).reshape(2, 2, 1, 1)  # (L, 2, S, S)
    >>> data, scale = encode_flow(flow, "uint8")
    >>> list(data), round(scale * 127, 6)
    ([192, 1, 128, 160], 1.0)
    >>> [round(float(x), 4) for x in decode_flow(data, "uint8", scale, steps=2, size=1).ravel()]  # within scale / 2
    [0.5039, -1.0, 0.0, 0.252]
    """
    if flow_dtype not in FLOW_DTYPES:
        raise ValueError(f"--flow-dtype {flow_dtype!r}: expected one of {', '.join(FLOW_DTYPES)}")
    values = flow.detach().cpu().float().numpy()
    if flow_dtype == "float16":
        return values.astype("<f2").tobytes(), None
    largest = float(np.abs(values).max()) if values.size else 0.0
    scale = np.float32(largest / 127 if largest > 0 else 1.0)
    codes = np.clip(np.rint(values / scale), -127, 127) + UINT8_ZERO
    return codes.astype(np.uint8).tobytes(), float(scale)


def decode_flow(data: bytes, flow_dtype: str, scale: float | None, *, steps: int, size: int) -> np.ndarray:
    """The `(steps, 2, size, size)` float32 flow that :func:`encode_flow` stored; SideShardError when the bytes do
    not hold that many values."""
    expected = flow_bytes_per_video(steps, size, flow_dtype)
    if len(data) != expected:
        raise SideShardError(
            f"a stored {flow_dtype} flow has {len(data)} bytes; {steps} steps of 2 x {size} x {size} need {expected}"
        )
    shape = (steps, 2, size, size)
    if flow_dtype == "float16":
        return np.frombuffer(data, dtype="<f2").astype(np.float32).reshape(shape)
    codes = np.frombuffer(data, dtype=np.uint8).astype(np.float32)
    return ((codes - UINT8_ZERO) * np.float32(scale)).reshape(shape)


# ---- what is computed -----------------------------------------------------------------------------------------------


def processor_settings(processor) -> dict[str, Any]:
    """The processor settings that decide which frames are read and how flow is computed: side shards made with
    other settings do not fit a processor with these."""
    return {
        "num_candidate_frames": processor.num_candidate_frames,
        "max_flow_steps": processor.max_flow_steps,
        "image_size": processor.image_size,
        "flow_config": dict(processor.flow_config),
        "max_video_duration_s": processor.max_video_duration_s,
        "max_video_pixels": processor.max_video_pixels,
    }


class FlowComputer:
    """Flow side shards: per video, ``candidate_indices`` and ``flow_indices`` (int32 lists), ``flow`` (the
    `(L, 2, S, S)` flow of ``processor.video_flow`` as bytes, :func:`encode_flow`) and ``flow_scale`` (uint8 only)."""

    kind = "flow"
    videos_per_call = 1

    def __init__(self, processor, flow_dtype: str = "float16"):
        if flow_dtype not in FLOW_DTYPES:
            raise ValueError(f"--flow-dtype {flow_dtype!r}: expected one of {', '.join(FLOW_DTYPES)}")
        self.processor = processor
        self.flow_dtype = flow_dtype
        self.settings = {"flow_dtype": flow_dtype}

    def schema(self):
        import pyarrow as pa

        return pa.schema(
            [
                pa.field("id", pa.string(), nullable=False),
                pa.field("candidate_indices", pa.list_(pa.int32()), nullable=False),
                pa.field("flow_indices", pa.list_(pa.int32()), nullable=False),
                pa.field("flow", pa.binary(), nullable=False),
                pa.field("flow_scale", pa.float32()),
            ]
        )

    def rows(self, records: list[dict], clips: list) -> list[dict]:
        rows = []
        for record, clip in zip(records, clips, strict=True):
            data, scale = encode_flow(self.processor.video_flow(clip), self.flow_dtype)
            rows.append(
                {
                    "id": record["id"],
                    "candidate_indices": [int(index) for index in clip.candidate_indices],
                    "flow_indices": [int(index) for index in clip.flow_indices],
                    "flow": data,
                    "flow_scale": scale,
                }
            )
        return rows


def describe_model(model_name_or_path: str, model) -> dict[str, Any]:
    """What identifies a model's weights: a local folder by the SHA-256 of its safetensors files, a Hub model by its
    commit."""
    folder = Path(model_name_or_path)
    if folder.is_dir():
        weights = {path.name: file_sha256(path) for path in sorted(folder.glob("*.safetensors"))}
        return {"model": str(folder.resolve()), "weights_sha256": weights}
    return {"model": model_name_or_path, "commit": getattr(model.config, "_commit_hash", None)}


class PseudoSpanComputer:
    """Pseudo-span side shards: per video, ``span_targets``, two ratios in [0, 1], made with `model` by
    `videotgb.pseudo_spans.pseudo_spans_from_model` (each candidate frame answers alone, greedy, unigram recall,
    largest rectangle), as the ``self_refine`` stage makes them online."""

    kind = "pseudo_spans"

    def __init__(
        self,
        model,
        processor,
        *,
        model_description: dict[str, Any],
        max_new_tokens: int = 128,
        batch_size: int = 32,
        subtract_min: bool = False,
    ):
        for flag, value in (("--max-new-tokens", max_new_tokens), ("--batch-size", batch_size)):
            if value < 1:
                raise ValueError(f"{flag} {value}: must be at least 1")
        self.model = model
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.subtract_min = subtract_min
        self.videos_per_call = max(1, batch_size // processor.num_candidate_frames)
        self.settings = {
            "model": model_description,
            "dtype": str(model.dtype).removeprefix("torch."),
            "max_new_tokens": max_new_tokens,
            "subtract_min": subtract_min,
        }

    def schema(self):
        import pyarrow as pa

        return pa.schema(
            [
                pa.field("id", pa.string(), nullable=False),
                pa.field("span_targets", pa.list_(pa.float64()), nullable=False),
            ]
        )

    def rows(self, records: list[dict], clips: list) -> list[dict]:
        from ..pseudo_spans import pseudo_spans_from_model

        spans = pseudo_spans_from_model(
            self.model,
            self.processor,
            clips,
            [record["question"] for record in records],
            [record["answer"] for record in records],
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            subtract_min=self.subtract_min,
        )
        return [{"id": record["id"], "span_targets": list(span)} for record, span in zip(records, spans, strict=True)]


# ---- writing --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Planned:
    """One side shard to make: its name and the media shard it belongs to."""

    name: str
    media_file: str
    media_shard: str
    media_content: str
    records: int


def precompute_side_shards(
    media: str | os.PathLike,
    output: str | os.PathLike,
    computer: FlowComputer | PseudoSpanComputer,
    *,
    rank: int = 0,
    world_size: int = 1,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Make this rank's side shards of the build in `media` into `output`; return the side manifest.

    Args:
        media: a complete folder of `videotgb data build` (local path or fsspec URL).
        output: the side folder (created if absent). One made with other settings or from another build is refused
            unless `overwrite`; one made with the same ones is resumed (finished side shards are kept).
        computer: what to compute (:class:`FlowComputer` or :class:`PseudoSpanComputer`).
        rank, world_size: this process makes the side shards ``i`` with ``i % world_size == rank``.
        overwrite: replace this rank's side shards of a previous run, whatever made them.
        progress: show a tqdm progress bar (records of this rank's side shards).

    Returns:
        The manifest: ``"complete": True`` with the counts when every side shard is finished (by any rank), else the
        manifest written at the start, ``"complete": False``.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"RANK {rank} and WORLD_SIZE {world_size}: need 0 <= RANK < WORLD_SIZE")
    build = read_build_manifest(media)
    base = str(media).rstrip("/")
    count = len(build["shards"])
    plan = [
        _Planned(
            side_shard_name(index, count), f"{base}/{shard['name']}", shard["name"], shard["content"], shard["records"]
        )
        for index, shard in enumerate(build["shards"])
    ]
    settings = {
        "side_version": SIDE_VERSION,
        "kind": computer.kind,
        "media_fingerprint": build["fingerprint"],
        "processor": processor_settings(computer.processor),
        **computer.settings,
    }
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    folder = Path(output)
    mine = [entry for index, entry in enumerate(plan) if index % world_size == rank]
    previous = _prepare_output(folder, settings, fingerprint, plan, mine, overwrite)
    if previous.get("complete") and all(_finished(folder, entry, fingerprint) for entry in plan):
        logger.warning(f"{folder}: already complete with these settings; nothing written")
        return previous

    pending = [entry for entry in mine if not _finished(folder, entry, fingerprint)]
    manifest_start = _manifest(settings, fingerprint, build, base, plan, None)
    if previous.get("fingerprint") != fingerprint or previous.get("complete") or overwrite:
        _write_manifest(folder, manifest_start)
    from tqdm.auto import tqdm

    description = f"{computer.kind} (rank {rank} of {world_size})" if world_size > 1 else computer.kind
    with tqdm(
        total=sum(entry.records for entry in pending), desc=description, unit="record", disable=not progress
    ) as bar:
        for entry in pending:
            _write_side_shard(folder, entry, build["format"], computer, fingerprint, bar)
    footers = [_footer(folder / entry.name) for entry in plan]
    if not all(_matches(footer, entry, fingerprint) for footer, entry in zip(footers, plan, strict=True)):
        finished = sum(_matches(footer, entry, fingerprint) for footer, entry in zip(footers, plan, strict=True))
        logger.warning(
            f"rank {rank}: wrote {len(pending)} side shard(s); {finished} of {count} are finished. The rank that "
            f"finishes the last one (or a rerun) writes the complete {MANIFEST_NAME}"
        )
        return manifest_start
    manifest = _manifest(settings, fingerprint, build, base, plan, footers)
    _write_manifest(folder, manifest)
    return manifest


class _RowGroups:
    """Rows written to a Parquet writer in row groups of about `ROW_GROUP_BYTES` of flow (a streaming reader holds one
    row group at a time)."""

    def __init__(self, writer, schema):
        self.writer, self.schema = writer, schema
        self.rows: list[dict] = []
        self.bytes = 0
        self.written = 0

    def add(self, rows: list[dict]) -> None:
        self.rows += rows
        self.bytes += sum(len(row.get("flow", b"")) for row in rows)
        if self.bytes >= ROW_GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.written += len(self.rows)
        self.rows, self.bytes = [], 0


def _write_side_shard(folder: Path, entry: _Planned, media_format: str, computer, fingerprint: str, bar) -> None:
    """Compute one side shard from its media shard into a hidden temporary file, renamed into place when complete."""
    import pyarrow.parquet as pq

    from ..video_io import VideoDecodeError
    from .shards import load_shard_files

    temporary = folder / f".{entry.name}.tmp"
    kinds: Counter[str] = Counter()
    skipped: list[dict[str, str]] = []
    try:
        with pq.ParquetWriter(temporary, computer.schema(), compression="zstd") as writer:
            groups = _RowGroups(writer, computer.schema())
            records: list[dict] = []  # decoded, waiting for the computer
            clips: list = []
            for record in load_shard_files([entry.media_file], media_format):
                bar.update(1)
                kinds[record["kind"]] += 1
                if record["kind"] != "video":
                    continue
                if not record["media"]:
                    skipped.append({"id": record["id"], "reason": "missing_video", "detail": "no media bytes"})
                    continue
                try:
                    clip = computer.processor.load_video(bytes(record["media"]), name=f"record {record['id']!r}")
                except VideoDecodeError as error:
                    logger.warning(f"skipping {record['id']!r} of {entry.media_shard}: {error}")
                    skipped.append({"id": record["id"], "reason": "undecodable_video", "detail": str(error)})
                    continue
                records.append(record)
                clips.append(clip)
                if len(records) >= computer.videos_per_call:
                    groups.add(computer.rows(records, clips))
                    records, clips = [], []
            if records:
                groups.add(computer.rows(records, clips))
            groups.flush()
            footer = {
                "side_version": SIDE_VERSION,
                "kind": computer.kind,
                "fingerprint": fingerprint,
                "media_shard": entry.media_shard,
                "media_content": entry.media_content,
                "records": sum(kinds.values()),
                "kinds": dict(kinds),
                "rows": groups.written,
                "skipped": skipped,
            }
            writer.add_key_value_metadata({_FOOTER_KEY: json.dumps(footer)})
        os.replace(temporary, folder / entry.name)
    finally:
        temporary.unlink(missing_ok=True)


def _footer(path: Path) -> dict[str, Any] | None:
    """The side-shard footer of a finished file, or None when there is no readable one."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(path).metadata.metadata or {}
        return json.loads(metadata[_FOOTER_KEY.encode()])
    except (OSError, KeyError, ValueError):
        return None


def _matches(footer: dict | None, entry: _Planned, fingerprint: str) -> bool:
    return (
        footer is not None
        and footer.get("fingerprint") == fingerprint
        and footer.get("media_shard") == entry.media_shard
        and footer.get("media_content") == entry.media_content
    )


def _finished(folder: Path, entry: _Planned, fingerprint: str) -> bool:
    return (folder / entry.name).is_file() and _matches(_footer(folder / entry.name), entry, fingerprint)


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    described = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if key == "media_fingerprint":
            described.insert(0, f"another shard build (fingerprint {str(before)[:12]}… → {str(after)[:12]}…)")
        elif isinstance(before, dict) and isinstance(after, dict):
            inner = [name for name in sorted(set(before) | set(after)) if before.get(name) != after.get(name)]
            described += [f"{key}.{name} {before.get(name)!r} → {after.get(name)!r}" for name in inner]
        else:
            described.append(f"{key} {before!r} → {after!r}")
    return ", ".join(described) or "the settings"


def _prepare_output(
    folder: Path, settings: dict, fingerprint: str, plan: list[_Planned], mine: list[_Planned], overwrite: bool
) -> dict[str, Any]:
    """The previous manifest ({} when none); refuses a folder of other settings or foreign files; removes this rank's
    temporary files (and with `overwrite` its side shards)."""
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"--output {folder}: is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / MANIFEST_NAME
    previous: dict[str, Any] = {}
    if manifest_path.is_file():
        try:
            previous = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = {"fingerprint": None}
    elif not overwrite and any(not path.name.startswith(f".{MANIFEST_NAME}") for path in folder.iterdir()):
        raise OutputFolderError(
            f"--output {folder}: the folder holds files but no {MANIFEST_NAME}; choose an empty or new folder, or "
            "pass --overwrite"
        )
    if previous and previous.get("fingerprint") != fingerprint and not overwrite:
        raise OutputFolderError(
            f"--output {folder}: holds side shards made from {_differences(previous.get('settings') or {}, settings)}"
            "; pass --overwrite to replace them"
        )
    names = {entry.name for entry in plan}
    own = {entry.name for entry in mine}
    for path in folder.iterdir():
        temporary = _SIDE_TEMPORARY.match(path.name)
        if temporary and path.name[1:-4] in own:
            path.unlink(missing_ok=True)  # what an interrupted run of this rank left
        elif overwrite and _SIDE_FILE.match(path.name) and (path.name in own or path.name not in names):
            path.unlink(missing_ok=True)
    return previous


def _manifest(
    settings: dict, fingerprint: str, build: dict, base: str, plan: list[_Planned], footers: list[dict] | None
) -> dict[str, Any]:
    """The side manifest: the settings and shards planned (`footers` None), or the complete one with the counts."""
    from .. import __version__

    manifest: dict[str, Any] = {
        "side_version": SIDE_VERSION,
        "kind": settings["kind"],
        "columns": list(SIDE_COLUMNS[settings["kind"]]),
        "complete": footers is not None,
        "fingerprint": fingerprint,
        "created_by": f"videotgb {__version__}",
        "media": {
            "location": base if "://" in base else str(Path(base).resolve()),
            "fingerprint": build["fingerprint"],
            "schema_version": build["schema_version"],
            "format": build["format"],
            "shards": len(plan),
            "records": build["records"],
        },
        "settings": settings,
    }
    shards = [
        {"name": entry.name, "media_shard": entry.media_shard, "media_content": entry.media_content, "complete": False}
        for entry in plan
    ]
    if footers is None:
        return manifest | {"shards": shards}
    skips = [skip for footer in footers for skip in footer["skipped"]]
    reasons = Counter(skip["reason"] for skip in skips)
    kinds: Counter[str] = Counter()
    for shard, footer in zip(shards, footers, strict=True):
        kinds.update(footer["kinds"])
        shard.update(records=footer["records"], rows=footer["rows"], skipped=len(footer["skipped"]), complete=True)
    return manifest | {
        "records": sum(footer["records"] for footer in footers),
        "kinds": {kind: kinds[kind] for kind in ("video", "image", "text")},
        "rows": sum(footer["rows"] for footer in footers),
        "skipped": {
            "total": len(skips),
            "reasons": {reason: reasons[reason] for reason in SIDE_SKIP_REASONS},
            "listed": len(skips[:MAX_LISTED_SKIPS]),
            "records": skips[:MAX_LISTED_SKIPS],
        },
        "shards": shards,
    }


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Atomically; a temporary name of this process's own, since several ranks may write the same manifest."""
    if manifest["complete"]:
        for shard in manifest["shards"]:
            shard["bytes"] = (folder / shard["name"]).stat().st_size
        manifest["bytes"] = sum(shard["bytes"] for shard in manifest["shards"])
    temporary = folder / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, folder / MANIFEST_NAME)


# ---- reading, for training ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SideFolder:
    """A complete side folder (local path or fsspec URL) and its manifest, checked by :func:`open_side_folders`."""

    location: str
    manifest: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    def file(self, index: int) -> str:
        return f"{self.location}/{self.manifest['shards'][index]['name']}"


def open_side_folders(media: str | os.PathLike, locations: Sequence[str]) -> list[SideFolder]:
    """The side folders at `locations`, checked against the build in `media` before any training work.

    Each must be a complete side folder of this version made from this very build (its fingerprint, and each media
    shard's records), with every side shard present; two folders may not be of the same kind. SideShardError naming
    the folder (and side shard) otherwise.
    """
    import fsspec

    from .shards import read_manifest

    build = read_build_manifest(media)
    expected = [(shard["name"], shard["content"]) for shard in build["shards"]]
    folders: dict[str, SideFolder] = {}
    for location in locations:
        base = str(location).rstrip("/")
        try:
            manifest = read_manifest(base)
        except FileNotFoundError:
            raise SideShardError(
                f"--side_files {location}: no {MANIFEST_NAME}; give a folder made by `videotgb data flow` or "
                "`videotgb data pseudo-spans`"
            ) from None
        if manifest.get("kind") not in SIDE_KINDS or "side_version" not in manifest:
            raise SideShardError(
                f"--side_files {location}: its {MANIFEST_NAME} is not that of a side folder (shard builds go to "
                "--train_files)"
            )
        if manifest["side_version"] != SIDE_VERSION:
            raise SideShardError(
                f"--side_files {location}: side_version {manifest['side_version']!r}, this videotgb reads "
                f"{SIDE_VERSION}; make it again"
            )
        if not manifest.get("complete"):
            raise SideShardError(f"--side_files {location}: not complete; run its command again to finish it")
        if manifest["media"]["fingerprint"] != build["fingerprint"]:
            raise SideShardError(
                f"--side_files {location}: made from another shard build ({manifest['media']['location']}, "
                f"fingerprint {manifest['media']['fingerprint'][:12]}…), not from {media} (fingerprint "
                f"{build['fingerprint'][:12]}…)"
            )
        made = [(shard["media_shard"], shard["media_content"]) for shard in manifest["shards"]]
        if made != expected:
            raise SideShardError(
                f"--side_files {location}: its {len(made)} side shards were made from other records than the "
                f"{len(expected)} media shards of {media}; make it again"
            )
        filesystem, root = fsspec.core.url_to_fs(base)
        for shard in manifest["shards"]:
            if not filesystem.exists(f"{root}/{shard['name']}"):
                raise SideShardError(f"--side_files {location}: side shard {shard['name']} is missing")
        if manifest["kind"] in folders:
            raise SideShardError(
                f"--side_files {folders[manifest['kind']].location} and {location} are both {manifest['kind']} "
                "side folders; give one of each kind"
            )
        folders[manifest["kind"]] = SideFolder(base, manifest)
    return list(folders.values())


def check_side_settings(folders: Sequence[SideFolder], processor) -> None:
    """SideShardError naming the folder when side shards were made with other frame or flow settings than
    `processor`'s (another frame count, flow size or estimator ... than training reads)."""
    current = processor_settings(processor)
    for folder in folders:
        made = folder.manifest["settings"]["processor"]
        if made != current:
            raise SideShardError(
                f"--side_files {folder.location}: made with other processor settings than the model's "
                f"({_differences({'processor': made}, {'processor': current})}); make it again with this model"
            )


def joined_columns(folders: Sequence[SideFolder]) -> list[str]:
    """The columns of the records :func:`joined_records` yields for these side folders."""
    columns = ["id", "kind", "question", "answer", "media", "span_targets"]
    if any(folder.kind == "flow" for folder in folders):
        columns += ["candidate_indices", "flow_indices", "flow"]
    return columns


def join_plan(media_files: Sequence[str], media_format: str, folders: Sequence[SideFolder]) -> list[dict[str, Any]]:
    """Per media shard, what :func:`joined_records` reads: the media file and its side shard in each folder."""
    plan = []
    for index, media_file in enumerate(media_files):
        sides = []
        for folder in folders:
            settings = folder.manifest["settings"]
            sides.append(
                {
                    "file": folder.file(index),
                    "kind": folder.kind,
                    "flow_dtype": settings.get("flow_dtype"),
                    "flow_size": settings["processor"]["flow_config"]["size"],
                }
            )
        plan.append({"media": media_file, "format": media_format, "sides": sides})
    return plan


def joined_records(shards: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The records of each media shard of a :func:`join_plan`, with the columns of its side shards (None where a side
    shard has no row for the record): a generator for `datasets.IterableDataset.from_generator`, whose shards are the
    plan's entries. A flow side gives ``candidate_indices``, ``flow_indices`` and ``flow``, the `(L, 2, S, S)`
    float32 flow; a pseudo-span side gives ``span_targets``. SideShardError naming the side shard and the id when a
    side shard does not follow its media shard's records."""
    from .shards import read_shard_file

    for shard in shards:
        readers = [_SideReader(side) for side in shard["sides"]]
        try:
            for record in read_shard_file(shard["media"], shard["format"]):
                joined = {name: record.get(name) for name in ("id", "kind", "question", "answer", "media")}
                joined["span_targets"] = record.get("span_targets")
                for reader in readers:
                    joined.update(reader.take(record["id"], shard["media"]))
                yield joined
            for reader in readers:
                reader.check_used(shard["media"])
        finally:
            for reader in readers:
                reader.close()


class _SideReader:
    """Rows of one side shard, read a few at a time, matched in order to the records of its media shard."""

    def __init__(self, side: dict[str, Any]):
        import fsspec
        import pyarrow.parquet as pq

        self.side = side
        self.handle = fsspec.open(side["file"], "rb").open()
        parquet = pq.ParquetFile(self.handle)
        self.ids = parquet.read(columns=["id"]).column("id").to_pylist()
        self.members = set(self.ids)
        self.rows = (row for batch in parquet.iter_batches(batch_size=4) for row in batch.to_pylist())
        self.position = 0

    def take(self, record_id: str, media_file: str) -> dict[str, Any]:
        if record_id not in self.members:
            return self.values(None)
        if self.ids[self.position] != record_id:
            raise SideShardError(
                f"{self.side['file']}: row {self.position} has id {self.ids[self.position]!r} where {media_file} "
                f"has {record_id!r}; the side shard does not belong to this media shard"
            )
        self.position += 1
        return self.values(next(self.rows))

    def values(self, row: dict[str, Any] | None) -> dict[str, Any]:
        if self.side["kind"] == "pseudo_spans":
            return {"span_targets": None if row is None else row["span_targets"]}
        if row is None:
            return {"candidate_indices": None, "flow_indices": None, "flow": None}
        flow = decode_flow(
            row["flow"],
            self.side["flow_dtype"],
            row["flow_scale"],
            steps=len(row["flow_indices"]),
            size=self.side["flow_size"],
        )
        return {
            "candidate_indices": np.asarray(row["candidate_indices"]),
            "flow_indices": np.asarray(row["flow_indices"]),
            "flow": flow,
        }

    def check_used(self, media_file: str) -> None:
        if self.position < len(self.ids):
            raise SideShardError(
                f"{self.side['file']}: id {self.ids[self.position]!r} is not among the records of {media_file} (in "
                "that order); the side shard does not belong to this media shard"
            )

    def close(self) -> None:
        self.handle.close()


__all__ = [
    "FLOW_DTYPES",
    "SIDE_COLUMNS",
    "SIDE_KINDS",
    "SIDE_SKIP_REASONS",
    "SIDE_VERSION",
    "FlowComputer",
    "PseudoSpanComputer",
    "SideFolder",
    "SideShardError",
    "check_side_settings",
    "decode_flow",
    "describe_model",
    "encode_flow",
    "flow_bytes_per_video",
    "join_plan",
    "joined_columns",
    "joined_records",
    "open_side_folders",
    "precompute_side_shards",
    "processor_settings",
    "side_shard_name",
]
