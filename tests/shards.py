"""Parquet training shards written directly with pyarrow, in the schema `videotgb.training.data` reads, from
videos encoded in memory: what the data-loading and training tests stream."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from videos import make_video, moving_square_frames


def png_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def video_bytes(frames: int, velocity=(1, 0)) -> bytes:
    return make_video(frames=moving_square_frames(num_frames=frames, size=(64, 48), velocity=velocity), fps=10, gop=10)


def record(record_id, kind, media=None, question="What moves?", answer="a square", span_targets=None) -> dict:
    return {
        "id": record_id,
        "source": "test",
        "kind": kind,
        "question": question,
        "answer": answer,
        "media": media,
        "span_targets": span_targets,
    }


def write_shards(folder, shards: list[list[dict]]) -> list[str]:
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("source", pa.string()),
            ("kind", pa.string()),
            ("question", pa.string()),
            ("answer", pa.string()),
            ("media", pa.binary()),
            ("span_targets", pa.list_(pa.float64())),
        ]
    )
    paths = []
    for index, records in enumerate(shards):
        path = folder / f"shard-{index:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(records, schema=schema), path)
        paths.append(str(path))
    return paths
