"""The one record schema of VideoTGB training shards (docs/data.md#the-record-schema).

Every shard, Parquet or WebDataset, holds records with exactly these fields. Fields computed later (optical flow,
pseudo spans, ...) go into side shards joined on ``id``; they never change this schema.
"""

from __future__ import annotations

SCHEMA_VERSION = 1
"""Stored in every record and in ``manifest.json``; raised whenever a field is added, removed or changes meaning."""

KINDS = ("video", "image", "text")

RECORD_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("id", "string", "unique over the whole build: `<source name>:<original id>`"),
    ("source", "string", "name of the annotation source the record comes from"),
    ("kind", "string", "`video`, `image` or `text`"),
    ("question", "string", "the first human turn, without its `<image>` / `<video>` placeholder"),
    ("answer", "string", "the first gpt turn after that question"),
    (
        "conversation",
        "string",
        'JSON list of every turn, `[{"from": "human" | "gpt", "value": ...}]`, placeholders removed',
    ),
    ("media", "binary", "the media file's bytes, exactly as on disk; null for text records"),
    ("media_name", "string", "the media path as the annotations give it, relative to the media root; null for text"),
    ("schema_version", "int32", "SCHEMA_VERSION of the build"),
)
"""(name, Arrow type, meaning) of each field, in column order."""

FIELD_NAMES = tuple(name for name, _, _ in RECORD_FIELDS)


def arrow_schema():
    """The Parquet / Arrow schema of a shard (`pyarrow` is imported here, not at module import)."""
    import pyarrow as pa

    types = {"string": pa.string(), "binary": pa.binary(), "int32": pa.int32()}
    nullable = {"media", "media_name"}
    return pa.schema(
        [pa.field(name, types[kind], nullable=name in nullable) for name, kind, _ in RECORD_FIELDS],
        metadata={"videotgb_schema_version": str(SCHEMA_VERSION)},
    )
