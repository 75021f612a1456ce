"""The synthetic benchmark's generator: deterministic videos in which the asked event is really there (decoded with
the package's reader), answers and spans that match it, disjoint splits, held-out pairs kept out of training, shards
that stream back, and impossible settings refused by name."""

from __future__ import annotations

import contextlib
import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli

from videotgb.cli import main
from videotgb.data import OutputFolderError, load_shards
from videotgb.synthetic import (
    COLOURS,
    HELD_OUT_PAIRS,
    MOTION_WORDS,
    NO_EVENT_ANSWER,
    SPLITS,
    SyntheticConfig,
    SyntheticConfigError,
    generate,
    load_index,
    make_scene,
    question_and_answer,
    samples,
)
from videotgb.video_io import probe_video, read_frames

SMALL = {"num_frames": 64, "fps": 8, "size": 64, "events_per_video": 3, "event_frames": 12, "gap_frames": 2}


def small_config(seed: int = 0, videos: int = 2, **overrides) -> SyntheticConfig:
    return SyntheticConfig(seed=seed, num_videos=dict.fromkeys(SPLITS, videos), **(SMALL | overrides))


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    generate(small_config(), out, shards=True)
    return out, load_index(out)


def test_same_seed_gives_byte_identical_files_and_index_other_seed_does_not(generated, tmp_path):
    out, index = generated
    again = generate(small_config(), tmp_path / "again")
    other = generate(small_config(seed=1), tmp_path / "other")
    assert again["samples"] == index["samples"]
    for sample in index["samples"]:
        assert (tmp_path / "again" / sample["file"]).read_bytes() == (out / sample["file"]).read_bytes()
    assert [s["events"] for s in other["samples"]] != [s["events"] for s in index["samples"]]
    for mine, theirs in zip(index["samples"], other["samples"], strict=True):
        assert (tmp_path / "other" / theirs["file"]).read_bytes() != (out / mine["file"]).read_bytes()


def _near(pixel: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return int(np.abs(pixel.astype(int) - np.array(colour)).max()) < 50


def test_videos_decode_and_show_each_shape_only_during_its_event(generated):
    out, index = generated
    side = index["settings"]["shape_size"]
    for sample in index["samples"][::3]:
        path = out / sample["file"]
        metadata = probe_video(path)
        assert (metadata.num_frames, metadata.fps, metadata.width) == (sample["num_frames"], 8, 64)
        frames = read_frames(path, range(sample["num_frames"]))
        for event in sample["events"]:
            colour = COLOURS[event["colour"]]
            (x0, y0), (x1, y1) = event["start_xy"], event["end_xy"]
            for frame in range(sample["num_frames"]):
                inside = event["start_frame"] <= frame < event["end_frame"]
                if inside:
                    fraction = (frame - event["start_frame"]) / (event["end_frame"] - 1 - event["start_frame"])
                    x, y = round(x0 + (x1 - x0) * fraction), round(y0 + (y1 - y0) * fraction)
                    assert _near(frames[frame, y + side // 2, x + side // 2], colour), (sample["id"], frame)
                # outside its event, neither end of its path shows the colour
                for x, y in ((x0, y0), (x1, y1)):
                    shown = _near(frames[frame, y + side // 2, x + side // 2], colour)
                    assert not shown or inside, (sample["id"], event, frame)
        assert index["samples"][0]["texture_seed"] != index["samples"][1]["texture_seed"]


def test_answer_spans_and_question_match_the_asked_event(generated):
    _, index = generated
    seen_types = set()
    for sample in index["samples"]:
        event = sample["events"][sample["event"]]
        asked = _as_event(event)
        assert question_and_answer(sample["question_type"], asked) == (sample["question"], sample["answer"])
        assert any(word in sample["question"].lower().rstrip("?").split() for word in MOTION_WORDS)
        assert sample["answer"] == event[sample["question_type"]]
        clue = "colour" if sample["question_type"] == "direction" else "direction"
        assert [e[clue] for e in sample["events"]].count(event[clue]) == 1, sample
        assert (sample["start_frame"], sample["end_frame"]) == (event["start_frame"], event["end_frame"])
        for span in (sample, *sample["events"]):
            assert span["end_frame"] - span["start_frame"] == 12
            assert span["start_s"] == span["start_frame"] / sample["fps"]
            assert span["end_s"] == span["end_frame"] / sample["fps"]
        bounds = [(e["start_frame"], e["end_frame"]) for e in sample["events"]]
        assert bounds[0][0] >= 0 and bounds[-1][1] <= sample["num_frames"] == 64
        assert all(later[0] - earlier[1] >= 2 for earlier, later in itertools.pairwise(bounds))
        assert len({e["colour"] for e in sample["events"]}) == 3
        assert sample["duration_s"] == 64 / 8
        seen_types.add(sample["question_type"])
    assert seen_types == {"colour", "direction", "shape"}


def _as_event(record):
    from videotgb.synthetic import Event

    return Event(
        record["colour"],
        record["shape"],
        record["direction"],
        record["start_frame"],
        record["end_frame"],
        tuple(record["start_xy"]),
        tuple(record["end_xy"]),
    )


def test_videos_without_events_ask_about_a_motion_that_does_not_happen(tmp_path):
    config = small_config(videos=3, events_per_video=0, num_frames=16)
    index = generate(config, tmp_path)
    for sample in index["samples"]:
        assert sample["answer"] == NO_EVENT_ANSWER and sample["events"] == [] and sample["event"] == -1
        assert sample["start_frame"] is None and sample["end_frame"] is None and sample["start_s"] is None
        assert set(sample["question"].lower().rstrip("?").split()) & set(MOTION_WORDS)
        frames = read_frames(str(tmp_path / sample["file"]), list(range(16)))
        saturated = np.ptp(frames.astype(int), axis=-1) > 100  # flat colours are saturated; the grey scene is not
        assert not saturated.any(), f"{sample['id']}: a shape is on screen"


def test_splits_are_disjoint(generated):
    _, index = generated
    by_split = {split: samples(index, split) for split in SPLITS}
    assert all(len(chosen) == 2 for chosen in by_split.values())
    assert len({s["id"] for s in index["samples"]}) == len({s["sha256"] for s in index["samples"]}) == 8
    config = small_config()
    scenes = {split: [make_scene(config, split, number).events for number in range(50)] for split in SPLITS}
    for first, second in itertools.combinations(SPLITS, 2):
        assert not set(scenes[first]) & set(scenes[second]), (first, second)


def test_held_out_pairs_are_asked_only_in_the_held_out_split():
    config = small_config(events_per_video=len(COLOURS) - 2, num_frames=200)
    held_out = set(HELD_OUT_PAIRS)
    asked_pairs = set()
    for split in SPLITS:
        for number in range(150):
            scene = make_scene(config, split, number)
            pairs = [(event.colour, event.direction) for event in scene.events]
            asked = pairs[scene.asked]
            if split == "held_out":
                assert asked in held_out
                assert not held_out & set(pairs[: scene.asked] + pairs[scene.asked + 1 :])
                asked_pairs.add(asked)
            else:
                assert not held_out & set(pairs), (split, number, pairs)
    assert asked_pairs == held_out  # every held-out pair gets asked


def test_shards_stream_back_with_the_index_records(generated, no_shutdown_pause):
    out, index = generated
    for split in ("train", "held_out"):
        records = list(load_shards(out / index["splits"][split]["shards"]))
        expected = samples(index, split)
        assert [record["id"] for record in records] == [sample["id"] for sample in expected]
        for record, sample in zip(records, expected, strict=True):
            assert record["kind"] == "video" and record["source"] == split
            assert (record["question"], record["answer"]) == (sample["question"], sample["answer"])
            assert record["media"] == (out / sample["file"]).read_bytes()
            assert record["media_name"] == sample["file"]


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"num_frames": 30}, "--frames 30: 3 events of 12 frames"),
        ({"event_frames": 100}, "longer than the video"),
        ({"events_per_video": 7}, "--events-per-video 7: the events of a video have distinct colours"),
        ({"events_per_video": -1}, "--events-per-video -1: must be an integer >= 0"),
        ({"size": 0}, "--size 0: must be a positive integer"),
        ({"size": 63}, "--size 63: must be even"),
        ({"shape_size": 60}, "--shape-size 60: too large"),
        ({"shape_size": -1}, "--shape-size -1"),
        ({"fps": 0}, "--fps 0"),
        ({"event_frames": 1}, "--event-frames 1: a motion needs at least 2 frames"),
        ({"gap_frames": -1}, "--gap-frames -1"),
        ({"question_types": ("colour", "when")}, "--question-types 'colour,when'"),
        ({"noise": -1.0}, "--noise -1.0"),
        ({"seed": -3}, "--seed -3"),
        ({"num_videos": {"train": -1}}, "--train-videos -1"),
        ({"num_videos": {"train": 0}}, "nothing to generate"),
        ({"num_videos": {"dev": 3}}, "unknown split"),
    ],
)
def test_impossible_settings_are_refused_by_name(settings, fragment):
    with pytest.raises(SyntheticConfigError) as caught:
        SyntheticConfig(**(SMALL | settings))
    assert fragment in str(caught.value)


def test_a_folder_with_files_is_kept_unless_overwrite(tmp_path):
    config = small_config(videos=1)
    generate(config, tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match="not empty"):
        generate(config, tmp_path)
    index = generate(small_config(seed=5, videos=1), tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert load_index(tmp_path) == index


def test_cli_generates_with_seconds_and_per_split_counts(tmp_path):
    status, printed, _ = run_cli(
        "synthetic", "generate", "--out", str(tmp_path), "--num-videos", "0", "--test-videos", "2", "--seconds", "8",
        "--fps", "8", "--event-frames", "8", "--no-progress",
    )  # fmt: skip
    assert status == 0, printed
    assert "wrote 2 test videos (64 frames at 8 fps, 64x64)" in printed
    index = load_index(tmp_path)
    assert list(index["splits"]) == ["test"] and index["settings"]["num_frames"] == 64
    assert sorted(path.name for path in (tmp_path / "videos" / "test").iterdir()) == ["000000.mp4", "000001.mp4"]


def test_cli_errors_are_one_line(tmp_path):
    status, _, err = run_cli("synthetic", "generate", "--out", str(tmp_path), "--frames", "20")
    assert_one_line_error(status, err, "videotgb synthetic generate: error:", "--frames 20", "longer than the video")
    status, _, err = run_cli("synthetic", "generate", "--out", str(tmp_path), "--frames", "64", "--seconds", "8")
    assert_one_line_error(status, err, "either --frames or --seconds")
    status, _, err = run_cli("synthetic", "generate", "--out", str(tmp_path), "--seconds", "0")
    assert_one_line_error(status, err, "--seconds 0.0: must be positive")
    (tmp_path / "file").write_text("x")
    status, _, err = run_cli("synthetic", "generate", "--out", str(tmp_path), "--num-videos", "1")
    assert_one_line_error(status, err, str(tmp_path), "not empty", "--overwrite")
    status, _, err = run_cli("synthetic", "generate", "--out", str(Path(tmp_path, "file")))
    assert_one_line_error(status, err, "is a file")


def test_generate_help_documents_every_flag():
    with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
        main(["synthetic", "generate", "--help"])
    text = out.getvalue()
    for flag in ("--out", "--seed", "--num-videos", "--train-videos", "--validation-videos", "--test-videos",
                 "--held-out-videos", "--frames", "--seconds", "--fps", "--size", "--shape-size",
                 "--events-per-video", "--event-frames", "--gap-frames", "--question-types", "--noise", "--shards",
                 "--shard-size", "--format-out", "--overwrite", "--no-progress"):  # fmt: skip
        assert flag in text
    for name in ("colour", "direction", "shape", "held_out", "index.json", "docs/synthetic.md"):
        assert name in text


def test_keyframe_interval_sets_the_encoded_keyframes_and_keyframe_aligned_reading_uses_them():
    from videotgb import video_io
    from videotgb.synthetic import encode_scene

    config = SyntheticConfig(num_videos={"test": 1}, num_frames=96, keyframe_interval=3)
    scene = make_scene(config, "test", 0)
    data = encode_scene(scene)
    _, scan, metadata = video_io._open_and_index(data, None, None)
    assert scan.keyframe_indices().tolist() == list(range(0, 96, 3))
    clip = video_io.read_video(data, 16, 24, alignment="keyframe")
    assert clip.alignment == "keyframe" and all(index % 3 == 0 for index in clip.candidate_indices)
    default = encode_scene(make_scene(SyntheticConfig(num_videos={"test": 1}, num_frames=96), "test", 0))
    _, scan, _ = video_io._open_and_index(default, None, None)
    assert scan.keyframe_indices().tolist() == [0, 32, 64]  # every 4 seconds at 8 fps
    with pytest.raises(SyntheticConfigError, match="--keyframe-interval 0: must be an integer >= 1"):
        SyntheticConfig(keyframe_interval=0)
