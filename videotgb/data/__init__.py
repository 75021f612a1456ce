"""Training data: annotation files (VideoInstruct-100K, LLaVA, Video-LLaVA, text-only) into streamable shards with
the media bytes inside (docs/data.md).

Not remote code: the model, processor and video files never import this package. `datasets` and `pyarrow` (the
``train`` extra) are imported only by the functions that need them.
"""

from .schema import FIELD_NAMES, KINDS, RECORD_FIELDS, SCHEMA_VERSION, arrow_schema
from .shards import (
    DEFAULT_SHARD_SIZE,
    MANIFEST_NAME,
    OUTPUT_FORMATS,
    DataDependencyError,
    MediaChangedError,
    OutputFolderError,
    SchemaVersionError,
    build_shards,
    check_schema_version,
    load_shard_files,
    load_shards,
    parse_size,
    plan_shards,
    read_build_manifest,
    read_manifest,
    read_shard_file,
    require_training_extra,
    shard_files,
    shard_schema_version,
    webdataset_features,
)
from .sources import FORMATS, SKIP_REASONS, AnnotationsError, Entry, Skip, Source, parse_source, read_source

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "FIELD_NAMES",
    "FORMATS",
    "KINDS",
    "MANIFEST_NAME",
    "OUTPUT_FORMATS",
    "RECORD_FIELDS",
    "SCHEMA_VERSION",
    "SKIP_REASONS",
    "AnnotationsError",
    "DataDependencyError",
    "Entry",
    "MediaChangedError",
    "OutputFolderError",
    "SchemaVersionError",
    "Skip",
    "Source",
    "arrow_schema",
    "build_shards",
    "check_schema_version",
    "load_shard_files",
    "load_shards",
    "parse_size",
    "parse_source",
    "plan_shards",
    "read_build_manifest",
    "read_manifest",
    "read_shard_file",
    "read_source",
    "require_training_extra",
    "shard_files",
    "shard_schema_version",
    "webdataset_features",
]
