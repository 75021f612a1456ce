"""Streaming training data from Parquet shards: real encoded videos decoded in the stream, bad records skipped and
counted exactly (never replaced), batches ready for the model."""

from __future__ import annotations

import json
from collections import Counter
from itertools import islice

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


def test_a_span_only_decoder_skips_what_is_not_a_video_with_span_targets_before_reading_media(processor, caplog):
    """For the grounding stage. A "video" of garbage bytes without span targets is refused for lacking them, before
    its bytes are read (else it would count as undecodable); each such reason is warned about once, not per record."""
    import logging

    from videotgb.training.data import SkippingDecoder

    records = [
        record("v1", "video", video_bytes(20), span_targets=[0.2, 0.6]),
        record("garbage", "video", b"\x00\x01 not a video at all"),
        record("i1", "image", png_bytes(0)),
        record("t1", "text"),
        record("no-question", "image", png_bytes(1), question=""),  # not a video comes first
        record("bad-span", "video", video_bytes(20), span_targets=[0.8, 0.1]),
        record("no-media", "video", None, span_targets=[0.1, 0.2]),
        record("v2", "video", video_bytes(20)),
        record("t2", "text"),
        record("v3", "video", video_bytes(20), span_targets=[0.0, 1.0]),
    ]
    decoder = SkippingDecoder(processor, span_only=True)
    with caplog.at_level(logging.WARNING, logger="videotgb.training.data"):
        examples = [decoder(item) for item in records]
    good = [example for example in examples if SkippingDecoder.is_decoded(example)]
    assert [example["id"] for example in good] == ["v1", "v3"]
    assert json.loads(good[1]["skipped"]) == {
        "missing_span_targets": 2,
        "not_a_video": 4,
        "malformed_record": 1,
        "missing_video": 1,
    }
    once = [line for line in caplog.messages if "further records skipped for this reason" in line]
    assert len(once) == 2
    assert "'garbage'" in once[0] and "skipped_missing_span_targets" in once[0]
    assert "'i1'" in once[1] and "skipped_not_a_video" in once[1]
    assert any("'bad-span'" in line for line in caplog.messages)  # damaged records keep a warning each
    # without span_only the same records are decoded as for the other stages
    plain = SkippingDecoder(processor)
    assert [plain(item)["id"] for item in records[:4]] == ["v1", None, "i1", "t1"]


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


@pytest.fixture(scope="module")
def three_sources(tmp_path_factory):
    """Three sources of text records (ids `<source><shard>-<index>`), two shards each; `b` has pseudo spans, which
    the others lack."""
    sources = []
    for name, size in (("a", 300), ("b", 150), ("c", 60)):
        shards = [
            [
                record(f"{name}{shard}-{index}", "text", question="Q?", answer=name, span_targets=None)
                for index in range(size // 2)
            ]
            for shard in (0, 1)
        ]
        if name == "b":
            for shard in shards:
                for row in shard:
                    row["span_targets"] = [0.1, 0.5]
        sources.append(write_shards(tmp_path_factory.mktemp(name), shards))
    return sources


def test_sources_mix_in_the_given_proportions_reproducibly(three_sources, processor, no_shutdown_pause):
    probabilities = [0.6, 0.3, 0.1]

    def first_ids(seed: int, count: int = 300) -> list[str]:
        stream = stream_examples(three_sources, processor, seed=seed, probabilities=probabilities)
        return [example["id"] for example in islice(stream, count)]

    ids = first_ids(seed=0)
    counts = Counter(record_id[0] for record_id in ids)
    for name, probability in zip(
        "abc", probabilities, strict=True
    ):  # within 4 standard deviations of the binomial count
        assert abs(counts[name] - 300 * probability) < 4 * (300 * probability * (1 - probability)) ** 0.5
    assert first_ids(seed=0) == ids and first_ids(seed=1) != ids
    # each source is read in its own order, shard after shard
    expected = [f"c{index // 30}-{index % 30}" for index in range(counts["c"])]
    assert [record_id for record_id in ids if record_id[0] == "c"] == expected


def test_the_first_exhausted_source_ends_the_pass_unless_told_otherwise(three_sources, processor, no_shutdown_pause):
    ids = [example["id"] for example in stream_examples(three_sources, processor, probabilities=[0.2, 0.2, 0.6])]
    assert Counter(record_id[0] for record_id in ids)["c"] == 60 and len(ids) < 510
    everything = stream_examples(
        three_sources, processor, probabilities=[0.2, 0.2, 0.6], stopping_strategy="all_exhausted_without_replacement"
    )
    assert Counter(example["id"][0] for example in everything) == {"a": 300, "b": 150, "c": 60}


@pytest.mark.parametrize("workers", [0, 2])
def test_a_mixed_stream_resumes_exactly_from_its_state(three_sources, processor, workers, no_shutdown_pause):
    from torchdata.stateful_dataloader import StatefulDataLoader

    def loader() -> StatefulDataLoader:
        stream = stream_examples(three_sources, processor, seed=5, probabilities=[0.5, 0.3, 0.2])
        collate = lambda examples: [example["id"] for example in examples]  # noqa: E731
        return StatefulDataLoader(stream, batch_size=8, num_workers=workers, collate_fn=collate)

    whole = list(loader())
    interrupted = loader()
    batches = iter(interrupted)
    first = [next(batches) for _ in range(7)]
    state = json.loads(json.dumps(interrupted.state_dict()))  # what a checkpoint holds
    del batches, interrupted
    resumed = loader()
    resumed.load_state_dict(state)
    assert first + list(resumed) == whole
