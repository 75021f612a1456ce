"""`videotgb data flow` and `videotgb data pseudo-spans`: side shards of a shard build, made in the test from videos
it encodes (one of them damaged inside its shard), joined to the records when training (docs/data.md#side-shards)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import assert_one_line_error, run_cli
from PIL import Image
from shards import video_bytes

from videotgb.cli import main as videotgb
from videotgb.data import Source, build_shards, load_shards
from videotgb.data.precompute import (
    FlowComputer,
    SideShardError,
    decode_flow,
    encode_flow,
    join_plan,
    joined_records,
    open_side_folders,
    precompute_side_shards,
)
from videotgb.processing_videotgb import VideoTGBProcessor
from videotgb.train import main as train
from videotgb.training.data import VideoTGBCollator, stream_examples

QUESTION = "Where does it go?"
# video id -> (frames, velocity of the square); "broken" is damaged inside its shard after the build
VIDEOS = {"right": (20, (1, 0)), "down": (16, (0, 1)), "diag": (12, (1, 1)), "broken": (14, (1, 0))}
TRAIN_COMMON = ["--per_device_train_batch_size", "2", "--logging_steps", "1", "--shuffle_buffer", "0", "--use_cpu"]
TRAIN_COMMON += ["--save_strategy", "no", "--dataloader_num_workers", "0", "--seed", "0"]


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture(scope="module")
def processor(checkpoint):
    return VideoTGBProcessor.from_pretrained(checkpoint)


def damage_in_place(folder: Path, media: bytes) -> None:
    """Overwrite a video's bytes inside its Parquet shard (stored uncompressed) with zeros: the shard still reads,
    the record's video no longer opens."""
    for shard in folder.glob("shard-*.parquet"):
        data = shard.read_bytes()
        if data.count(media) == 1:
            shard.write_bytes(data.replace(media, bytes(len(media))))
            return
    raise AssertionError("the video's bytes are not in exactly one shard")


def make_build(root: Path, name: str, video_ids: list[str], with_other_kinds: bool, format_out="parquet") -> Path:
    media = root / "media"
    media.mkdir(exist_ok=True)
    for video_id, (frames, velocity) in VIDEOS.items():
        (media / f"{video_id}.mp4").write_bytes(video_bytes(frames, velocity))
    Image.new("RGB", (32, 24), (200, 120, 40)).save(media / "cat.png")
    vi = root / f"{name}-vi.json"
    vi.write_text(json.dumps([{"video_id": video_id, "q": QUESTION, "a": "it moves"} for video_id in video_ids]))
    sources = [Source("vi", "videoinstruct", vi, media)]
    if with_other_kinds:
        llava = root / f"{name}-llava.json"
        turns = [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "orange"}]
        llava.write_text(json.dumps([{"id": "cat", "image": "cat.png", "conversations": turns}]))
        text = root / f"{name}-text.json"
        text.write_text(json.dumps([{"instruction": "Say hi.", "input": "", "output": "hi"}] * 2))
        sources += [Source("llava", "llava", llava, media), Source("text", "text", text)]
    folder = root / name
    build_shards(sources, folder, shard_size="1GB", world_size=4 if with_other_kinds else 2, format_out=format_out)
    if "broken" in video_ids:
        damage_in_place(folder, (media / "broken.mp4").read_bytes())
    return folder


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """9 records in 4 shards: 6 videos (one damaged), an image and two texts."""
    ids = ["right", "down", "broken", "diag", "right", "down"]
    return make_build(tmp_path_factory.mktemp("build"), "shards", ids, with_other_kinds=True)


@pytest.fixture(scope="module")
def video_build(tmp_path_factory):
    """8 video records in 2 shards, one damaged: what the grounding stage trains on."""
    ids = ["right", "down", "broken", "diag", "right", "down", "right", "down"]
    return make_build(tmp_path_factory.mktemp("video_build"), "videos", ids, with_other_kinds=False)


def flow_command(build: Path, checkpoint: Path, output: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli("data", "flow", "--shards", str(build), "--model", str(checkpoint), "--output", str(output),
                   "--no-progress", *extra)  # fmt: skip


@pytest.fixture(scope="module")
def flow(build, checkpoint, tmp_path_factory):
    output = tmp_path_factory.mktemp("flow") / "float16"
    status, printed, err = flow_command(build, checkpoint, output)
    assert status == 0, err
    return output, printed


def side_rows(folder: Path) -> dict[str, list[dict]]:
    """Side shard name -> its rows."""
    return {path.name: pq.read_table(path).to_pylist() for path in sorted(folder.glob("side-*.parquet"))}


def media_records(build: Path) -> list[dict]:
    return list(load_shards(build))


def video_records(build: Path, shard: str) -> list[dict]:
    return [r for r in pq.read_table(build / shard, columns=["id", "kind"]).to_pylist() if r["kind"] == "video"]


def stats(folder: Path) -> dict[str, tuple[int, int]]:
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in sorted(folder.glob("side-*"))}


def test_flow_side_shards_have_a_row_per_decodable_video_and_count_the_skipped_one(build, flow):
    output, printed = flow
    manifest = json.loads((output / "manifest.json").read_text())
    media = json.loads((build / "manifest.json").read_text())
    assert (
        manifest["complete"]
        and manifest["kind"] == "flow"
        and manifest["media"]["fingerprint"] == media["fingerprint"]
    )
    assert manifest["records"] == 9 and manifest["kinds"] == {"video": 6, "image": 1, "text": 2}
    assert manifest["rows"] == 5
    assert manifest["skipped"]["total"] == 1 and manifest["skipped"]["reasons"] == {
        "missing_video": 0,
        "undecodable_video": 1,
    }
    assert [(record["id"], record["reason"]) for record in manifest["skipped"]["records"]] == [
        ("vi:broken", "undecodable_video")
    ]
    assert [shard["name"] for shard in manifest["shards"]] == [f"side-{i:05d}-of-00004.parquet" for i in range(4)]
    assert [shard["media_shard"] for shard in manifest["shards"]] == [shard["name"] for shard in media["shards"]]
    # side shard i holds the video records of media shard i that decode, in order
    rows = side_rows(output)
    for side, shard in zip(manifest["shards"], media["shards"], strict=True):
        media_ids = [record["id"] for record in video_records(build, shard["name"]) if record["id"] != "vi:broken"]
        assert [row["id"] for row in rows[side["name"]]] == media_ids
        assert side["rows"] == len(media_ids)
    assert "wrote flow for 5 of 6 video records in 4 side shards" in printed
    assert "skipped 1 video records (1 undecodable_video)" in printed
    assert "at most 65536 bytes per video" in printed  # 16 steps x 2 x 32 x 32 x 2 bytes


def test_precomputed_flow_is_what_the_processor_computes_online(build, flow, processor):
    output, _ = flow
    rows = {row["id"]: row for shard in side_rows(output).values() for row in shard}
    checked = 0
    for record in media_records(build):
        if record["id"] not in rows:
            continue
        row = rows[record["id"]]
        clip = processor.load_video(record["media"])
        online = processor([QUESTION], videos=[record["media"]])["flow"][0]
        steps = len(row["flow_indices"])
        stored = decode_flow(row["flow"], "float16", row["flow_scale"], steps=steps, size=32)
        assert row["candidate_indices"] == list(clip.candidate_indices)
        assert row["flow_indices"] == list(clip.flow_indices) and steps == min(16, clip.metadata.num_frames)
        assert torch.equal(torch.from_numpy(stored), online[:steps].half().float())
        assert row["flow_scale"] is None
        checked += 1
    assert checked == 5


def test_uint8_flow_is_within_half_a_step_of_the_float_flow(build, flow, checkpoint, tmp_path):
    float16, _ = flow
    status, _, err = flow_command(build, checkpoint, tmp_path / "uint8", "--flow-dtype", "uint8")
    assert status == 0, err
    exact = {row["id"]: row for shard in side_rows(float16).values() for row in shard}
    for shard in side_rows(tmp_path / "uint8").values():
        for row in shard:
            steps = len(row["flow_indices"])
            reference = decode_flow(exact[row["id"]]["flow"], "float16", None, steps=steps, size=32)
            assert len(row["flow"]) == len(exact[row["id"]]["flow"]) // 2
            quantised = decode_flow(row["flow"], "uint8", row["flow_scale"], steps=steps, size=32)
            largest = np.abs(reference).max()
            assert row["flow_scale"] == pytest.approx(largest / 127, rel=1e-3)
            assert np.abs(quantised - reference).max() <= row["flow_scale"] / 2 + largest * 1e-3  # float16 rounding


def test_flow_round_trips_through_both_encodings():
    generator = torch.Generator().manual_seed(0)
    flow = torch.randn(3, 2, 8, 8, generator=generator)
    data, scale = encode_flow(flow, "float16")
    assert scale is None and torch.equal(torch.from_numpy(decode_flow(data, "float16", None, steps=3, size=8)),
                                         flow.half().float())  # fmt: skip
    data, scale = encode_flow(flow, "uint8")
    back = decode_flow(data, "uint8", scale, steps=3, size=8)
    assert np.abs(back - flow.numpy()).max() <= scale / 2 + 1e-7
    zero, zero_scale = encode_flow(torch.zeros(1, 2, 4, 4), "uint8")
    assert set(zero) == {128} and not decode_flow(zero, "uint8", zero_scale, steps=1, size=4).any()
    with pytest.raises(SideShardError, match="need 256"):
        decode_flow(data[:-1], "uint8", scale, steps=2, size=8)
    with pytest.raises(ValueError, match="--flow-dtype 'int4'"):
        encode_flow(flow, "int4")


def test_an_interrupted_run_resumes_making_only_the_unfinished_side_shards(build, flow, processor, monkeypatch,
                                                                           tmp_path):  # fmt: skip
    complete, _ = flow
    output = tmp_path / "flow"
    calls = []
    real_rows = FlowComputer.rows

    def interrupted(self, records, clips):
        calls.append([record["id"] for record in records])
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real_rows(self, records, clips)

    monkeypatch.setattr(FlowComputer, "rows", interrupted)
    with pytest.raises(KeyboardInterrupt):
        precompute_side_shards(build, output, FlowComputer(processor))
    manifest = json.loads((output / "manifest.json").read_text())
    assert not manifest["complete"] and not list(output.glob(".side-*"))  # the unfinished one left nothing
    finished = sorted(path.name for path in output.glob("side-*"))
    assert finished and len(finished) < 4
    before = stats(output)
    (output / ".side-00003-of-00004.parquet.tmp").write_bytes(b"PAR1 what a killed process leaves")

    decoded = []
    real_load = VideoTGBProcessor.load_video

    def counting(self, video, name="video"):
        decoded.append(name)
        return real_load(self, video, name)

    monkeypatch.setattr(FlowComputer, "rows", real_rows)
    monkeypatch.setattr(VideoTGBProcessor, "load_video", counting)
    manifest = precompute_side_shards(build, output, FlowComputer(processor))
    assert manifest["complete"] and not list(output.glob(".side-*"))
    assert {name: stats(output)[name] for name in finished} == before  # finished ones untouched
    media_names = [f"shard-{index:05d}-of-00004.parquet" for index in range(4)]
    unfinished = [name for name in media_names if name.replace("shard-", "side-") not in finished]
    assert len(decoded) == sum(len(video_records(build, name)) for name in unfinished)
    assert side_rows(output) == side_rows(complete)
    reference = json.loads((complete / "manifest.json").read_text())
    assert {k: v for k, v in manifest.items() if k != "created_by"} == {
        k: v for k, v in reference.items() if k != "created_by"
    }

    # a deleted side shard is the only one made again; a complete folder is left alone
    victim = output / "side-00001-of-00004.parquet"
    victim.unlink()
    before = stats(output)
    decoded.clear()
    precompute_side_shards(build, output, FlowComputer(processor))
    assert victim.is_file() and {name: stats(output)[name] for name in before} == before
    assert len(decoded) == len(video_records(build, "shard-00001-of-00004.parquet"))
    decoded.clear()
    before = stats(output)
    precompute_side_shards(build, output, FlowComputer(processor))
    assert decoded == [] and stats(output) == before


@pytest.mark.slow
def test_a_folder_of_other_settings_or_another_build_is_refused_without_overwrite(build, video_build, flow,
                                                                                  checkpoint, tmp_path):  # fmt: skip
    output = tmp_path / "flow"
    shutil.copytree(flow[0], output)
    before = stats(output)
    status, _, err = flow_command(build, checkpoint, output, "--flow-dtype", "uint8")
    assert_one_line_error(status, err, "videotgb data flow: error:", "flow_dtype 'float16' → 'uint8'", "--overwrite")
    status, _, err = flow_command(video_build, checkpoint, output)
    assert_one_line_error(status, err, "another shard build", "--overwrite")
    assert stats(output) == before
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    status, _, err = flow_command(build, checkpoint, tmp_path / "foreign")
    assert_one_line_error(status, err, "no manifest.json", "--overwrite")
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"

    status, _, err = flow_command(video_build, checkpoint, output, "--overwrite")
    assert status == 0, err
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["complete"] and len(manifest["shards"]) == 2
    assert sorted(path.name for path in output.glob("side-*")) == [shard["name"] for shard in manifest["shards"]]

    status, _, err = run_cli("data", "flow", "--shards", str(tmp_path / "nowhere"), "--model", str(checkpoint),
                             "--output", str(tmp_path / "o"))  # fmt: skip
    assert_one_line_error(status, err, "nowhere")
    old = tmp_path / "old"
    shutil.copytree(build, old)
    manifest = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps(manifest | {"schema_version": 0}))
    status, _, err = flow_command(old, checkpoint, tmp_path / "o")
    assert_one_line_error(status, err, "record schema version 0", "--overwrite")
    assert not (tmp_path / "o").exists()


def test_two_ranks_make_disjoint_side_shards_that_together_are_complete(build, flow, processor, tmp_path):
    output = tmp_path / "flow"
    first = precompute_side_shards(build, output, FlowComputer(processor), rank=0, world_size=2)
    assert not first["complete"]
    assert sorted(path.name for path in output.glob("side-*")) == [
        "side-00000-of-00004.parquet",
        "side-00002-of-00004.parquet",
    ]
    second = precompute_side_shards(build, output, FlowComputer(processor), rank=1, world_size=2)
    assert second["complete"] and second["rows"] == 5
    assert side_rows(output) == side_rows(flow[0])
    with pytest.raises(ValueError, match="RANK 2 and WORLD_SIZE 2"):
        precompute_side_shards(build, output, FlowComputer(processor), rank=2, world_size=2)


@pytest.mark.slow
def test_two_processes_from_the_environment_write_the_folder_together(build, flow, checkpoint, tmp_path):
    output = tmp_path / "flow"
    command = [sys.executable, "-m", "videotgb.cli", "data", "flow", "--shards", str(build), "--model",
               str(checkpoint), "--output", str(output), "--no-progress"]  # fmt: skip
    processes = [
        subprocess.Popen(
            command,
            env=dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), HF_HUB_OFFLINE="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rows"] == 5 and side_rows(output) == side_rows(flow[0])


@pytest.mark.slow
def test_pseudo_spans_are_those_the_model_makes_online(build, checkpoint, tmp_path):
    from videotgb.cli import load
    from videotgb.pseudo_spans import pseudo_spans_from_model

    output = tmp_path / "spans"
    status, printed, err = run_cli("data", "pseudo-spans", "--shards", str(build), "--model", str(checkpoint),
                                   "--output", str(output), "--max-new-tokens", "3", "--batch-size", "8",
                                   "--no-progress")  # fmt: skip
    assert status == 0, err
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["complete"] and manifest["kind"] == "pseudo_spans" and manifest["rows"] == 5
    assert manifest["skipped"]["reasons"]["undecodable_video"] == 1
    assert manifest["settings"]["max_new_tokens"] == 3 and manifest["settings"]["subtract_min"] is False
    assert "wrote pseudo_spans for 5 of 6 video records" in printed
    rows = [row for shard in side_rows(output).values() for row in shard]
    model, processor = load(str(checkpoint))
    records = {record["id"]: record for record in media_records(build)}
    for row in rows:
        record = records[row["id"]]
        clip = processor.load_video(record["media"])
        expected = pseudo_spans_from_model(
            model, processor, [clip], [record["question"]], [record["answer"]], max_new_tokens=3, batch_size=8
        )
        assert row["span_targets"] == list(expected[0])
        assert 0 <= row["span_targets"][0] <= row["span_targets"][1] <= 1


@pytest.fixture(scope="module")
def sides(video_build, checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sides")
    status, _, err = flow_command(video_build, checkpoint, folder / "flow")
    assert status == 0, err
    status, _, err = run_cli("data", "pseudo-spans", "--shards", str(video_build), "--model", str(checkpoint),
                             "--output", str(folder / "spans"), "--max-new-tokens", "2", "--no-progress")  # fmt: skip
    assert status == 0, err
    return folder / "flow", folder / "spans"


class DecodeCounter:
    """Counts videos opened by PyAV and flows computed by the processor."""

    def __init__(self, monkeypatch):
        import av

        self.opened, self.flows = 0, 0
        real_open, real_flow = av.open, VideoTGBProcessor.video_flow

        def opening(*args, **kwargs):
            self.opened += 1
            return real_open(*args, **kwargs)

        def flowing(processor, clip):
            self.flows += 1
            return real_flow(processor, clip)

        monkeypatch.setattr(av, "open", opening)
        monkeypatch.setattr(VideoTGBProcessor, "video_flow", flowing)


def run_training(stage, checkpoint, train_files, side_files, output, *extra) -> list[dict]:
    argv = ["--stage", stage, "--model", str(checkpoint), "--train_files", *map(str, train_files)]
    argv += ["--side_files", *map(str, side_files)] if side_files else []
    status = train([*argv, "--output_dir", str(output), *TRAIN_COMMON, *extra])
    assert status == 0
    return [
        entry for entry in json.loads((output / "trainer_state.json").read_text())["log_history"] if "loss" in entry
    ]


def test_grounding_on_side_shards_decodes_no_video(video_build, sides, checkpoint, monkeypatch, tmp_path):
    from safetensors.torch import load_file

    counter = DecodeCounter(monkeypatch)
    steps = run_training("grounding", checkpoint, [video_build], sides, tmp_path / "out", "--max_steps", "6",
                         "--learning_rate", "1e-3")  # fmt: skip
    assert counter.opened == 0 and counter.flows == 0
    assert len(steps) == 6 and steps[-1]["loss"] < steps[0]["loss"]
    assert all(0 <= entry["grounding_iou"] <= 1 for entry in steps)
    # 7 good records a pass and 12 examples read: the damaged video was met twice
    assert steps[-1]["skipped_missing_flow"] == 2 and steps[-1]["skipped_undecodable_video"] == 0
    before, after = load_file(checkpoint / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed and all(key.startswith("bridge.") for key in changed)


def test_instruct_with_precomputed_flow_decodes_frames_but_computes_no_flow(video_build, sides, checkpoint,
                                                                            monkeypatch, tmp_path):  # fmt: skip
    counter = DecodeCounter(monkeypatch)
    steps = run_training("instruct", checkpoint, [video_build], sides[:1], tmp_path / "out", "--max_steps", "2")
    assert len(steps) == 2 and counter.opened > 0 and counter.flows == 0


def test_joined_side_rows_follow_the_media_records(video_build, sides, processor):
    folders = open_side_folders(video_build, [str(side) for side in sides])
    files = [str(video_build / name) for name in ("shard-00000-of-00002.parquet", "shard-00001-of-00002.parquet")]
    records = list(joined_records(join_plan(files, "parquet", folders)))
    assert [record["id"] for record in records] == [record["id"] for record in load_shards(video_build)]
    broken = next(record for record in records if record["id"] == "vi:broken")
    assert broken["flow"] is None and broken["span_targets"] is None
    good = next(record for record in records if record["id"] == "vi:right")
    assert (
        good["flow"].shape == (16, 2, 32, 32) and good["flow"].dtype == np.float32 and len(good["span_targets"]) == 2
    )
    # data-loader workers each read whole pairs of shards; batches carry the stored flow and the skip counts
    loader = torch.utils.data.DataLoader(
        stream_examples(files, processor, side_folders=folders, decode_frames=False),
        batch_size=4,
        num_workers=2,
        collate_fn=VideoTGBCollator(processor),
    )
    batches = list(loader)
    assert sorted(row for batch in batches for row in batch["record_ids"]) == sorted(
        record["id"] for record in records if record["id"] != "vi:broken"
    )
    assert sum(batch["skipped"].get("missing_flow", 0) for batch in batches) == 1
    assert all("pixel_values" not in batch and batch["flow"].shape[2:] == (2, 32, 32) for batch in batches)
    assert all(not torch.isnan(batch["span_targets"]).any() for batch in batches)
    # side shard 1 read beside media shard 0: the first id out of place is named, with the side shard
    swapped = join_plan(files[::-1], "parquet", folders)
    with pytest.raises(SideShardError, match=r"side-0000[01]-of-00002\.parquet.*'vi:"):
        list(joined_records(swapped))


class TestBadSideFilesAreRefusedBeforeWork:
    @pytest.fixture
    def refused(self, capsys, checkpoint, video_build, tmp_path):
        def run(train_files, side_files) -> str:
            argv = ["--stage", "grounding", "--model", str(checkpoint), "--train_files", *map(str, train_files)]
            argv += ["--side_files", *map(str, side_files), "--output_dir", str(tmp_path / "o"), "--max_steps", "1"]
            assert train(argv) == 2
            return capsys.readouterr().err

        return run

    def test_a_side_folder_of_another_build(self, refused, build, flow, sides, video_build):
        err = refused([video_build], [flow[0]])
        assert "made from another shard build" in err and str(flow[0]) in err

    def test_a_missing_side_shard(self, refused, video_build, sides, tmp_path):
        copy = tmp_path / "flow"
        shutil.copytree(sides[0], copy)
        (copy / "side-00001-of-00002.parquet").unlink()
        assert "side shard side-00001-of-00002.parquet is missing" in refused([video_build], [copy])

    def test_shards_of_another_schema_version(self, refused, video_build, sides, tmp_path):
        old = tmp_path / "old"
        shutil.copytree(video_build, old)
        manifest = json.loads((old / "manifest.json").read_text())
        (old / "manifest.json").write_text(json.dumps(manifest | {"schema_version": 99}))
        assert "record schema version 99" in refused([old], sides)

    def test_side_shards_of_other_processor_settings(self, refused, video_build, sides, tmp_path):
        copy = tmp_path / "flow"
        shutil.copytree(sides[0], copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["settings"]["processor"]["max_flow_steps"] = 8
        (copy / "manifest.json").write_text(json.dumps(manifest))
        assert "processor.max_flow_steps 8 → 16" in refused([video_build], [copy])

    def test_side_files_without_their_build_folder(self, refused, video_build, sides):
        err = refused([str(video_build / "shard-*.parquet")], sides)
        assert "--side_files needs --train_files to be the one folder" in err

    def test_two_side_folders_of_one_kind(self, refused, video_build, sides):
        assert "both flow side folders" in refused([video_build], [sides[0], sides[0]])

    def test_an_incomplete_side_folder(self, refused, video_build, sides, tmp_path):
        copy = tmp_path / "flow"
        shutil.copytree(sides[0], copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        (copy / "manifest.json").write_text(json.dumps(manifest | {"complete": False}))
        assert "not complete" in refused([video_build], [copy])


@pytest.mark.parametrize("command", ["flow", "pseudo-spans"])
def test_side_command_help_documents_every_flag(command):
    with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
        videotgb(["data", command, "--help"])
    text = out.getvalue()
    flags = ["--shards", "--model", "--output", "--revision", "--overwrite", "--no-progress"]
    flags += ["--flow-dtype"] if command == "flow" else ["--max-new-tokens", "--batch-size", "--subtract-min",
                                                         "--dtype", "--device"]  # fmt: skip
    for flag in flags:
        assert flag in text
    for name in ("torchrun", "RANK", "WORLD_SIZE", "--side_files", "docs/data.md"):
        assert name in text


def test_a_webdataset_build_gets_side_shards_and_joins_them(checkpoint, tmp_path):
    from videotgb.data import read_shard_file, shard_files

    build = make_build(tmp_path, "wds", ["right", "diag"], with_other_kinds=True, format_out="webdataset")
    files, file_format = shard_files(build)
    assert file_format == "webdataset"
    assert [record for file in files for record in read_shard_file(file, "webdataset")] == list(load_shards(build))
    status, _, err = flow_command(build, checkpoint, tmp_path / "flow")
    assert status == 0, err
    records = list(joined_records(join_plan(files, file_format, open_side_folders(build, [str(tmp_path / "flow")]))))
    assert [record["id"] for record in records] == [record["id"] for record in load_shards(build)]
    assert [record["id"] for record in records if record["flow"] is not None] == ["vi:right", "vi:diag"]
