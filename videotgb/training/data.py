"""Streaming training data: shard files -> decoded examples -> batches for `VideoTGBForConditionalGeneration`.

Records follow the shard schema of `videotgb data build` (docs/data.md): `id`, `source`, `kind` (`video`, `image`
or `text`), `question`, `answer`, `media` (bytes, or null for text) and optionally `span_targets` (the pseudo span
as two ratios of the video in [0, 1]), which side shards of `videotgb data pseudo-spans` add. Decoding runs inside
the iterable dataset, hence in the data loader's worker processes: a video's candidate frames and flow-frame pairs
are read with `video_io` from the bytes, an image with PIL. With the side shards of `videotgb data flow`, a video's
flow comes precomputed (never computed again), and a stage that reads no frames (`grounding`) decodes no video. A
record that cannot be used (missing or undecodable media, a malformed field; for `grounding`, a record that is not a
video with span targets) is skipped, never replaced; the number skipped per reason travels with the next good example (`skipped`, a JSON object), so that the counts reach
the training loop from any worker, and `VideoTGBCollator` sums them per batch. Not part of a checkpoint's remote
code.
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers.utils import logging

from ..data.schema import KINDS

logger = logging.get_logger(__name__)

SPAN_ONLY_SKIP_REASONS = ("not_a_video", "missing_span_targets")
"""Why a stage that trains only the span loss on given span targets (`grounding`) skips a good record: it is an
image or text record, or a video without `span_targets` (in the record or in a pseudo-span side shard)."""
DECODE_SKIP_REASONS = (
    "malformed_record",
    "missing_video",
    "missing_image",
    "undecodable_video",
    "undecodable_image",
    "missing_flow",
    *SPAN_ONLY_SKIP_REASONS,
)
EXAMPLE_COLUMNS = (
    "id",
    "kind",
    "question",
    "answer",
    "candidate_indices",
    "candidate_frames",
    "candidate_timestamps",
    "flow_indices",
    "flow_frames",
    "flow_next_frames",
    "flow",
    "image",
    "span_targets",
    "skipped",
)


class BadRecordError(ValueError):
    """A record that cannot be trained on; `reason` is the key it is counted under."""

    def __init__(self, record_id: Any, reason: str, detail: str):
        super().__init__(f"record {record_id!r}: {detail}")
        self.reason = reason


def _text_field(record: dict, field: str, record_id: Any) -> str:
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        raise BadRecordError(
            record_id, "malformed_record", f"field {field!r} must be a non-empty string, got {value!r}"
        )
    return value


def _span_targets(record: dict, record_id: Any) -> list[float]:
    value = record.get("span_targets")
    if value is None:
        return [math.nan, math.nan]
    if not isinstance(value, Sequence) or len(value) != 2 or not all(isinstance(v, (int, float)) for v in value):
        raise BadRecordError(record_id, "malformed_record", f"span_targets must be two ratios, got {value!r}")
    start, end = (float(v) for v in value)
    if not (0 <= start <= end <= 1):
        raise BadRecordError(
            record_id, "malformed_record", f"span_targets must satisfy 0 <= start <= end <= 1, got {value!r}"
        )
    return [start, end]


def decode_record(record: dict, processor, decode_frames: bool = True, span_only: bool = False) -> dict:
    """One shard record -> one example with decoded frames (the columns of `EXAMPLE_COLUMNS`).

    A record joined to flow side shards has a `flow` field: the video's precomputed `(L, 2, S, S)` flow, or None
    when they have none for it (`missing_flow`). Its example carries that flow; the video is decoded only for its
    candidate frames, and not at all when `decode_frames` is False (a stage that reads no frames).

    With `span_only` (a stage that trains only the span loss on given span targets), a record that is not a video
    (`not_a_video`) or has no `span_targets` (`missing_span_targets`) is refused before its media are read; the
    other reasons found without reading the media (a malformed field, `missing_video`, `missing_flow`) come first.

    Raises BadRecordError (with the record's id and a `reason`) for anything that cannot be trained on.
    """
    from .. import video_io

    record_id = record.get("id")
    kind = record.get("kind")
    if kind not in KINDS:
        raise BadRecordError(record_id, "malformed_record", f"kind must be one of {KINDS}, got {kind!r}")
    if span_only and kind != "video":
        raise BadRecordError(record_id, "not_a_video", f"a {kind} record; this stage trains on videos only")
    example = {column: None for column in EXAMPLE_COLUMNS}
    example.update(
        id=str(record_id),
        kind=kind,
        question=_text_field(record, "question", record_id),
        answer=_text_field(record, "answer", record_id),
        span_targets=_span_targets(record, record_id),
    )
    if kind == "text":
        return example
    media = record.get("media")
    if not isinstance(media, (bytes, bytearray)) or not media:
        raise BadRecordError(record_id, f"missing_{kind}", f"the {kind} record has no media bytes")
    if kind == "video" and "flow" in record and record["flow"] is None:
        raise BadRecordError(
            record_id, "missing_flow", "the flow side shards have no flow for this video (see their manifest.json)"
        )
    if span_only and math.isnan(example["span_targets"][0]):
        raise BadRecordError(
            record_id,
            "missing_span_targets",
            "the video has no span_targets (in its record or in a pseudo-span side shard); this stage trains on "
            "span targets only",
        )
    if kind == "video" and "flow" in record:
        example["flow"] = record["flow"]
        if not decode_frames:
            example.update(candidate_indices=record["candidate_indices"], flow_indices=record["flow_indices"])
            return example
    if kind == "image":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(media)) as image:
                example["image"] = np.asarray(image.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise BadRecordError(record_id, "undecodable_image", f"the image does not decode ({error})") from None
        return example
    try:
        clip = processor.load_video(bytes(media), name=f"record {record_id!r}")
    except video_io.VideoDecodeError as error:
        raise BadRecordError(record_id, "undecodable_video", str(error)) from None
    example.update(
        candidate_indices=np.asarray(clip.candidate_indices),
        candidate_frames=clip.candidate_frames,
        candidate_timestamps=np.asarray(clip.candidate_timestamps, dtype=np.float64),
        flow_indices=np.asarray(clip.flow_indices),
        flow_frames=clip.flow_frames,
        flow_next_frames=clip.flow_next_frames,
    )
    return example


class SkippingDecoder:
    """An `IterableDataset.map` function, one record at a time: decodes a record, or counts it as skipped and returns
    an example whose `skipped` is None, which `is_decoded` (the filter after it) drops. A good example carries the
    per-reason counts of the records skipped since the last good one (`skipped`, JSON).

    One record in, one example out, with no batch of records held back: the stream's `state_dict()` then points just
    past the last example handed on, so a resumed stream decodes only the records after it (nothing is pending at
    that point: a good example has just cleared the counts). Each data-loader worker holds its own copy; counts
    pending when a worker's stream ends are logged there. `decode_frames` and `span_only` as in `decode_record`.

    A record skipped because it is damaged gets a warning of its own; one that is fine but not what a `span_only`
    stage trains on (`SPAN_ONLY_SKIP_REASONS`), one warning per reason and worker: a mixed build may hold many.
    """

    def __init__(self, processor, decode_frames: bool = True, span_only: bool = False):
        self.processor = processor
        self.decode_frames = decode_frames
        self.span_only = span_only
        self.pending: Counter[str] = Counter()
        self.warned: set[str] = set()

    def __call__(self, record: dict) -> dict:
        try:
            example = decode_record(record, self.processor, self.decode_frames, self.span_only)
        except BadRecordError as error:
            self.pending[error.reason] += 1
            if error.reason not in SPAN_ONLY_SKIP_REASONS:
                logger.warning("skipping %s (%s)", error, error.reason)
            elif error.reason not in self.warned:
                self.warned.add(error.reason)
                logger.warning(
                    "skipping %s (%s); further records skipped for this reason are counted under skipped_%s in the "
                    "training logs without a warning each",
                    error,
                    error.reason,
                    error.reason,
                )
            return dict.fromkeys(EXAMPLE_COLUMNS)
        example["skipped"] = json.dumps(dict(self.pending), sort_keys=True)
        self.pending.clear()
        return example

    @staticmethod
    def is_decoded(example: dict) -> bool:
        return example["skipped"] is not None

    def __del__(self):
        if self.pending:
            logger.warning("records skipped after the last good example of this stream: %s", dict(self.pending))


STOPPING_STRATEGIES = ("first_exhausted", "all_exhausted", "all_exhausted_without_replacement")


def read_records(
    sources: Sequence[Sequence[str]],
    file_format: str = "parquet",
    shuffle_buffer: int = 0,
    seed: int = 0,
    probabilities: Sequence[float] | None = None,
    stopping_strategy: str = "first_exhausted",
    side_folders: Sequence = (),
):
    """The shard records of one or several sources, as one stream (before decoding).

    Args:
        sources: the shard files of each source.
        probabilities: with one value per source, the next record comes from source `i` with probability
            `probabilities[i]` (`datasets.interleave_datasets`, seeded with `seed`); without, the sources are read one
            after the other.
        stopping_strategy: with `probabilities`, when the stream ends: `"first_exhausted"` (when a source runs out),
            `"all_exhausted"` (when every source has run out at least once, the others starting over) or
            `"all_exhausted_without_replacement"` (every record of every source once).
        shuffle_buffer: with a positive value, shards are shuffled (within each source) and records drawn from a
            buffer of that size (`seed` makes it repeatable); 0 keeps the order of the shards.
        side_folders: side folders of the one source's build (`videotgb.data.precompute.open_side_folders` checks
            them); their columns are joined to its records on `id`, side shard `i` with shard file `i`.

    Returns:
        A `datasets.IterableDataset` of records; its `state_dict()` resumes it exactly when `shuffle_buffer` is 0.
    """
    from datasets import interleave_datasets

    from ..data.shards import load_shard_files

    if side_folders:
        if len(sources) != 1 or probabilities is not None:
            raise ValueError("side folders belong to one build: give them with one source, without probabilities")
        from datasets import IterableDataset

        from ..data.precompute import join_plan, joined_records

        plan = join_plan(sources[0], file_format, side_folders)
        records = IterableDataset.from_generator(joined_records, gen_kwargs={"shards": plan})
    elif probabilities is None:
        records = load_shard_files([file for files in sources for file in files], file_format, strict_schema=False)
    else:
        if len(probabilities) != len(sources):
            raise ValueError(f"{len(probabilities)} probabilities for {len(sources)} sources")
        streams = [load_shard_files(list(files), file_format, strict_schema=False) for files in sources]
        records = interleave_datasets(
            streams, probabilities=list(probabilities), seed=seed, stopping_strategy=stopping_strategy
        )
    if shuffle_buffer > 0:
        records = records.shuffle(seed=seed, buffer_size=shuffle_buffer)
    return records


def stream_examples(
    data_files: str | Sequence[str] | Sequence[Sequence[str]],
    processor,
    shuffle_buffer: int = 0,
    seed: int = 0,
    file_format: str = "parquet",
    probabilities: Sequence[float] | None = None,
    stopping_strategy: str = "first_exhausted",
    side_folders: Sequence = (),
    decode_frames: bool = True,
    span_only: bool = False,
):
    """Stream shard files (local paths, globs or fsspec URLs such as `hf://datasets/...`) as decoded examples.

    Args:
        data_files: the shard files (`videotgb.data.shard_files(folder)` lists those of a build), or one list of
            files per source, mixed as `read_records` says.
        processor: the `VideoTGBProcessor` whose frame and flow settings decode the videos.
        shuffle_buffer, seed, probabilities, stopping_strategy: as in `read_records`.
        file_format: `"parquet"` or `"webdataset"`.
        side_folders: side folders of these shards, checked by `videotgb.data.precompute.open_side_folders`; their
            columns are joined to the records on `id` (side shard `i` with shard file `i`).
        decode_frames: False when the stage reads no frames: with precomputed flow, videos are then not decoded.
        span_only: True when the stage trains only the span loss on given span targets: records that are not videos
            with `span_targets` are skipped and counted (`SPAN_ONLY_SKIP_REASONS`) before any decoding.

    Returns:
        A `datasets.IterableDataset` of decoded examples; each data-loader worker reads its own shards. Its
        `state_dict()` points just past the last example handed on (see `SkippingDecoder`).
    """
    if isinstance(data_files, str):
        sources = [[data_files]]
    elif all(isinstance(files, str) for files in data_files):
        sources = [list(data_files)]
    else:
        sources = [list(files) for files in data_files]
    records = read_records(sources, file_format, shuffle_buffer, seed, probabilities, stopping_strategy, side_folders)
    decoder = SkippingDecoder(processor, decode_frames, span_only)
    columns = records.column_names
    if not columns and side_folders:
        from ..data.precompute import joined_columns

        columns = joined_columns(side_folders)
    columns = columns or ["id", "kind", "question", "answer", "media"]
    return records.map(decoder, remove_columns=columns).filter(decoder.is_decoded)


class VideoTGBCollator:
    """Decoded examples -> a training batch from `VideoTGBProcessor` (answers as labels, flow computed here, in the
    worker, unless the examples carry it precomputed), plus `span_targets` `(batch, 2)` (NaN rows for examples without a pseudo span) and `skipped`, the
    per-reason counts of the records dropped before these examples, and `record_ids`. With `keep_clips`, `pseudo_span_inputs` holds
    the decoded clips, questions and answers, from which self-refinement makes its pseudo spans."""

    def __init__(self, processor, keep_clips: bool = False):
        self.processor = processor
        self.keep_clips = keep_clips

    def __call__(self, examples: list[dict]) -> dict:
        from ..video_io import VideoClip

        videos, images, flows = [], [], []
        for example in examples:
            clip = None
            if example["kind"] == "video" and example["candidate_frames"] is not None:
                clip = VideoClip(
                    metadata=None,
                    candidate_indices=list(example["candidate_indices"]),
                    candidate_frames=np.array(example["candidate_frames"], dtype=np.uint8),
                    candidate_timestamps=np.asarray(example["candidate_timestamps"], dtype=np.float64),
                    flow_indices=list(example["flow_indices"]),
                    flow_frames=np.asarray(example["flow_frames"], dtype=np.uint8),
                    flow_next_frames=np.asarray(example["flow_next_frames"], dtype=np.uint8),
                    flow_timestamps=np.full(len(example["flow_indices"]), np.nan),
                )
            videos.append(clip)
            images.append(None if example["image"] is None else np.array(example["image"], dtype=np.uint8))
            flows.append(None if example["flow"] is None else np.asarray(example["flow"], dtype=np.float32))
        batch = dict(
            self.processor(
                [example["question"] for example in examples],
                videos=videos,
                images=images,
                answers=[example["answer"] for example in examples],
                flows=flows if any(flow is not None for flow in flows) else None,
            )
        )
        batch["span_targets"] = torch.tensor(
            [list(example["span_targets"]) for example in examples], dtype=torch.float
        )
        skipped: Counter[str] = Counter()
        for example in examples:
            skipped.update(json.loads(example["skipped"] or "{}"))
        batch["skipped"] = dict(skipped)
        batch["record_ids"] = [example["id"] for example in examples]
        if self.keep_clips:  # for pseudo spans made online (self-refinement): the frames as decoded, and the texts
            batch["pseudo_span_inputs"] = {
                "clips": videos,
                "questions": [example["question"] for example in examples],
                "answers": [example["answer"] for example in examples],
            }
        return batch


__all__ = [
    "DECODE_SKIP_REASONS",
    "SPAN_ONLY_SKIP_REASONS",
    "STOPPING_STRATEGIES",
    "BadRecordError",
    "SkippingDecoder",
    "VideoTGBCollator",
    "decode_record",
    "read_records",
    "stream_examples",
]
