"""Streaming training data from Parquet shards: real encoded videos decoded in the stream, bad records skipped and
counted exactly (never replaced), batches ready for the model."""

from __future__ import annotations

import io
import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import make_processor, real_vocab_model
from PIL import Image
from videos import make_video, moving_square_frames

from videotgb.training.data import VideoTGBCollator, load_shards

SHARD_COLUMNS = ("id", "source", "kind", "question", "answer", "media", "span_targets")


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


@pytest.fixture(scope="module")
def processor(llama_tokenizer_path, minilm_path):
    return make_processor(llama_tokenizer_path, minilm_path)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    first = [
        record("v1", "video", video_bytes(40), span_targets=[0.2, 0.6]),
        record("bad-bytes", "video", b"\x00\x01 not a video at all"),
        record("i1", "image", png_bytes(0), question="What is shown?", answer="noise"),
        record("t1", "text", question="Say hi", answer="hello"),
    ]
    second = [
        record("no-media", "video", None),
        record("no-question", "video", video_bytes(20), question=""),
        record("v2", "video", video_bytes(25, velocity=(0, 1))),
        record("bad-image", "image", b"GIF89a broken"),
        record("bad-span", "video", video_bytes(20), span_targets=[0.8, 0.1]),
        record("v3", "video", video_bytes(30)),
    ]
    return write_shards(folder, [first, second])


EXPECTED_GOOD = ["v1", "i1", "t1", "v2", "v3"]
EXPECTED_SKIPPED = {"undecodable_video": 1, "missing_video": 1, "malformed_record": 2, "undecodable_image": 1}


def test_bad_records_are_skipped_and_counted_exactly_never_replaced(shards, processor):
    examples = list(load_shards(shards, processor))
    assert [example["id"] for example in examples] == EXPECTED_GOOD
    skipped = Counter()
    for example in examples:
        skipped.update(json.loads(example["skipped"]))
    assert dict(skipped) == EXPECTED_SKIPPED
    video = examples[0]
    assert np.asarray(video["candidate_frames"]).shape == (8, 32, 32, 3)
    assert np.asarray(video["flow_frames"]).shape[0] == 16
    assert video["span_targets"] == [0.2, 0.6]


def test_batches_from_worker_processes_carry_the_skip_counts(shards, processor):
    loader = torch.utils.data.DataLoader(
        load_shards(shards, processor), batch_size=2, num_workers=2, collate_fn=VideoTGBCollator(processor)
    )
    skipped, rows = Counter(), 0
    for batch in loader:
        skipped.update(batch.pop("skipped"))
        rows += batch["input_ids"].shape[0]
        assert batch["labels"].shape == batch["input_ids"].shape
    assert rows == len(EXPECTED_GOOD) and dict(skipped) == EXPECTED_SKIPPED


def test_a_batch_trains_the_model(shards, processor):
    examples = list(load_shards(shards, processor))
    batch = VideoTGBCollator(processor)(examples)
    assert batch.pop("skipped") == EXPECTED_SKIPPED
    assert batch["pixel_values"].shape == (5, 8, 3, 28, 28) and batch["flow"].shape[:2] == (5, 16)
    assert batch["flow_mask"].sum(-1).tolist() == [16, 0, 0, 16, 16]
    assert torch.isnan(batch["span_targets"][1:]).all() and batch["span_targets"][0].tolist() == pytest.approx(
        [0.2, 0.6]
    )
    model = real_vocab_model("llama").train()
    out = model(**batch)
    assert torch.isfinite(out.loss) and out.span_loss is not None
    out.loss.backward()


def test_shuffling_reorders_but_keeps_every_good_record(shards, processor):
    ids = [example["id"] for example in load_shards(shards, processor, shuffle_buffer=4, seed=3)]
    assert sorted(ids) == sorted(EXPECTED_GOOD)


def test_bad_arguments(processor):
    with pytest.raises(ValueError, match="no shard files"):
        load_shards([], processor)
    with pytest.raises(ValueError, match="file_format must be"):
        load_shards(["x.parquet"], processor, file_format="csv")
