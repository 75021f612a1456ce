"""Streaming training data from Parquet shards: real encoded videos decoded in the stream, bad records skipped and
counted exactly (never replaced), batches ready for the model."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import make_processor, real_vocab_model
from shards import png_bytes, record, video_bytes, write_shards

from videotgb.training.data import VideoTGBCollator, stream_examples


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
    examples = list(stream_examples(shards, processor))
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
        stream_examples(shards, processor), batch_size=2, num_workers=2, collate_fn=VideoTGBCollator(processor)
    )
    skipped, rows = Counter(), 0
    for batch in loader:
        skipped.update(batch.pop("skipped"))
        rows += batch["input_ids"].shape[0]
        assert batch["labels"].shape == batch["input_ids"].shape
    assert rows == len(EXPECTED_GOOD) and dict(skipped) == EXPECTED_SKIPPED


def test_a_batch_trains_the_model(shards, processor):
    examples = list(stream_examples(shards, processor))
    batch = VideoTGBCollator(processor)(examples)
    assert batch.pop("skipped") == EXPECTED_SKIPPED
    assert batch.pop("record_ids") == EXPECTED_GOOD
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
    ids = [example["id"] for example in stream_examples(shards, processor, shuffle_buffer=4, seed=3)]
    assert sorted(ids) == sorted(EXPECTED_GOOD)


def test_bad_arguments(processor):
    with pytest.raises(ValueError, match="no shard files"):
        stream_examples([], processor)
    with pytest.raises(ValueError, match="shard format must be one of"):
        stream_examples(["x.parquet"], processor, file_format="csv")
