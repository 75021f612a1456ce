"""`videotgb export` / `videotgb.hub_upload`: an exported folder holds only what the export wrote (safetensors, remote
code, processor, RAFT weights by a relative name, manifest), loads and answers in a fresh process without the package,
and anything else in it (a pickle, an unknown file, a changed file) is refused by name."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import assert_one_line_error, make_processor, real_vocab_model, run_cli

from videotgb.demo import DEFAULT_MODEL, demo_scene, recipe_of
from videotgb.hub_upload import (
    MANIFEST_NAME,
    ExportError,
    check_export,
    export,
    main,
    model_card,
    read_example,
    verify,
)
from videotgb.synthetic import encode_scene

AUTO_MAP = {
    "AutoConfig": "configuration_videotgb.VideoTGBConfig",
    "AutoModel": "modeling_videotgb.VideoTGBForConditionalGeneration",
    "AutoModelForImageTextToText": "modeling_videotgb.VideoTGBForConditionalGeneration",
    "AutoProcessor": "processing_videotgb.VideoTGBProcessor",
}
REMOTE_CODE = {
    "configuration_videotgb.py",
    "modeling_videotgb.py",
    "processing_videotgb.py",
    "keyframes.py",
    "video_io.py",
    "optical_flow.py",
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The shipped tiny model exported once (no verification); tests copy it before changing it."""
    return export(DEFAULT_MODEL, tmp_path_factory.mktemp("export") / "videotgb-tiny")


def copy_of(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def test_the_export_holds_weights_code_processor_and_carried_files(exported):
    names = {path.name for path in exported.iterdir()}
    shipped = {path.name for path in DEFAULT_MODEL.iterdir()}
    assert names == shipped | REMOTE_CODE | {"handler.py", "requirements.txt", "examples", MANIFEST_NAME}
    config = json.loads((exported / "config.json").read_text())
    assert config.pop("auto_map") == AUTO_MAP
    original = json.loads((DEFAULT_MODEL / "config.json").read_text())
    original.pop("auto_map")
    for key in ("transformers_version", "use_cache"):  # Trainer's use_cache=False is not kept by a plain reload
        config.pop(key, None), original.pop(key, None)
    assert config == original
    assert (exported / "recipe.json").read_bytes() == (DEFAULT_MODEL / "recipe.json").read_bytes()
    manifest = check_export(exported)
    assert set(manifest["files"]) == {
        path.relative_to(exported).as_posix() for path in exported.rglob("*") if path.is_file()
    } - {MANIFEST_NAME}


def test_the_export_answers_its_example_video_and_draws_the_keyframes(exported):
    example = read_example(exported)
    scene = demo_scene(recipe_of(DEFAULT_MODEL))
    assert (exported / example["video"]).read_bytes() == encode_scene(scene)
    assert example["question"] == scene.question and example["gold"] == scene.answer
    assert example["answer"] == scene.answer  # the shipped model answers its demo video correctly
    assert len(example["keyframe_timestamps"]) == 4
    assert example["true_span_s"] == pytest.approx(scene.events[scene.asked].span_seconds(scene.fps), abs=1e-4)
    assert (exported / example["picture"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_the_cli_exports_the_shipped_model_and_a_fresh_process_answers_its_demo_video(tmp_path):
    out = tmp_path / "hub"
    status, printed, err = run_cli(
        "export", "--model", str(DEFAULT_MODEL), "--out", str(out), "--repo-id", "someone/videotgb-tiny"
    )
    assert status == 0, err
    scene = demo_scene(recipe_of(DEFAULT_MODEL))
    assert f"verified in a fresh process without the package: {scene.question} -> {scene.answer!r}" in printed
    assert (out / "README.md").is_file()  # the card is one of the files the check accepts
    answered = verify(out)  # the same answer again, through the function (it runs the card's usage code)
    assert answered["answer"] == scene.answer
    assert answered["model_module"].startswith("transformers_modules")
    assert answered["processor_module"].startswith("transformers_modules")


def test_weights_are_sharded_with_an_index(tmp_path):
    out = export(DEFAULT_MODEL, tmp_path / "sharded", max_shard_size="1MB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all(name.endswith(".safetensors") for name in shards)
    assert not (out / "model.safetensors").exists()
    assert set(check_export(out)["files"]) >= shards


def test_raft_weights_are_carried_into_the_folder_under_a_relative_name(tmp_path, llama_tokenizer_path, minilm_path):
    from videotgb import VideoTGBProcessor
    from videotgb.optical_flow import FlowConfig, load_raft, save_raft_weights

    flow = {"estimator": "raft_small", "size": 128, "raft_iterations": 2}
    weights = tmp_path / "elsewhere" / "raft_small.safetensors"
    weights.parent.mkdir()
    save_raft_weights(load_raft(FlowConfig(**flow), device="cpu"), weights)
    model = real_vocab_model("llama", bridge_config={"flow_size": 128, "flow_estimator": "raft_small"})
    processor = make_processor(llama_tokenizer_path, minilm_path, flow_config=dict(flow, raft_weights=str(weights)))
    out = export(model, tmp_path / "hub", processor=processor)
    assert processor.flow_config["raft_weights"] == str(weights)  # the caller's processor is unchanged
    assert (out / weights.name).read_bytes() == weights.read_bytes()
    saved = json.loads((out / "processor_config.json").read_text())["flow_config"]
    assert saved["raft_weights"] == weights.name
    shutil.rmtree(weights.parent)  # the folder alone must be enough
    loaded = VideoTGBProcessor.from_pretrained(out)
    assert loaded.flow_settings().raft_weights == str(out / weights.name)
    load_raft(loaded.flow_settings(), device="cpu")  # strict load of the carried file
    assert weights.name in check_export(out)["files"]


@pytest.mark.parametrize("name", ["pytorch_model.bin", "qformer_tokenizer/extra.pt", "raft.pth", "state.pkl"])
def test_a_pickle_file_is_refused_by_name(exported, tmp_path, name):
    folder = copy_of(exported, tmp_path)
    (folder / name).write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ExportError, match=f"refusing pickle files {name}"):
        verify(folder)


def test_a_file_the_export_did_not_write_is_refused_by_name(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(ExportError, match="files the export did not write: notes.txt"):
        verify(folder)


def test_a_changed_or_missing_file_is_refused_by_name(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    with (folder / "tokenizer.json").open("a") as handle:
        handle.write(" ")
    with pytest.raises(ExportError, match="tokenizer.json: changed since the export"):
        check_export(folder)
    (folder / "recipe.json").unlink()
    with pytest.raises(ExportError, match="missing: recipe.json"):
        check_export(folder)


def test_a_folder_without_a_manifest_is_not_an_export(tmp_path):
    with pytest.raises(ExportError, match=f"no {MANIFEST_NAME}"):
        check_export(DEFAULT_MODEL)


class TestExportCommandBadInput:
    def test_a_non_empty_out_needs_overwrite(self, tmp_path):
        out = tmp_path / "out"
        out.mkdir()
        (out / "mine.txt").write_text("keep me")
        status, _, err = run_cli("export", "--model", str(DEFAULT_MODEL), "--out", str(out), "--no-verify")
        assert_one_line_error(status, err, str(out), "--overwrite")
        status, _, err = run_cli(
            "export", "--model", str(DEFAULT_MODEL), "--out", str(out), "--no-verify", "--overwrite"
        )
        assert_one_line_error(status, err, str(out), f"no {MANIFEST_NAME}")
        assert [path.name for path in out.iterdir()] == ["mine.txt"]

    def test_overwrite_replaces_a_previous_export(self, exported, tmp_path):
        out = copy_of(exported, tmp_path)
        (out / "stale.txt").write_text("from before")
        status, _, err = run_cli(
            "export", "--model", str(DEFAULT_MODEL), "--out", str(out), "--no-verify", "--overwrite"
        )
        assert status == 0, err
        assert not (out / "stale.txt").exists()
        check_export(out)

    def test_a_missing_model(self, tmp_path):
        missing = tmp_path / "no-such-model"
        status, _, err = run_cli("export", "--model", str(missing), "--out", str(tmp_path / "out"))
        assert_one_line_error(status, err, str(missing))
        assert not (tmp_path / "out").exists()

    def test_the_module_entry_point_is_the_export_command(self, tmp_path, capsys):
        missing = tmp_path / "no-such-model"
        assert main(["--model", str(missing), "--out", str(tmp_path / "out")]) == 2
        assert_one_line_error(2, capsys.readouterr().err, "videotgb export: error:", str(missing))


def test_the_model_card_renders_reloads_and_its_model_index_round_trips(tmp_path):
    from huggingface_hub import ModelCard

    results = tmp_path / "results.json"
    results.write_text(
        json.dumps({"settings": {"split": "test", "num_keyframes": 4}, "modes": {"bridge": {"accuracy": 0.8125}}})
    )
    out = export(
        DEFAULT_MODEL,
        tmp_path / "hub",
        repo_id="someone/videotgb-tiny",
        license="apache-2.0",
        eval_files=[results],
        space_id="someone/videotgb-tiny-demo",
    )
    assert "README.md" in check_export(out)["files"]
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "video-text-to-text"
    assert card.data.license == "apache-2.0"
    assert "custom_code" in card.data.tags
    (result,) = card.data.eval_results  # parsed back from the YAML model-index by huggingface_hub
    assert (result.dataset_split, result.metric_type, result.metric_value) == ("test", "accuracy", 0.8125)
    assert 'AutoModel.from_pretrained("someone/videotgb-tiny", trust_remote_code=True)' in card.text
    assert "videotgb synthetic generate" in card.text  # how it was made, from recipe.json
    assert "@inproceedings" in card.text and "2024.emnlp-main.556" in card.text
    (widget,) = card.data.widget  # the example the export answered, in the Hub's asset + text widget schema
    example = read_example(out)
    assert widget["text"] == example["question"] and widget["output"] == {"text": example["answer"]}
    assert widget["src"] == "https://huggingface.co/someone/videotgb-tiny/resolve/main/examples/video.mp4"
    assert "(examples/keyframes.png)" in card.text
    assert card.data.base_model is None and card.data.datasets is None  # trained from scratch on generated videos
    link = "[the someone/videotgb-tiny-demo Space](https://huggingface.co/spaces/someone/videotgb-tiny-demo)"
    assert f"**Try it in a browser:** {link}" in card.text  # `videotgb export --space-id`
    assert "Try it" not in model_card(out, "someone/videotgb-tiny").text


class TestModelCardBadInput:
    def test_a_repo_id_that_is_not_owner_name(self, tmp_path):
        status, _, err = run_cli(
            "export", "--model", str(DEFAULT_MODEL), "--out", str(tmp_path / "o"), "--repo-id", "just-a-name"
        )
        assert_one_line_error(status, err, "--repo-id 'just-a-name'", "owner/name")

    def test_eval_results_without_a_repo_id(self, tmp_path):
        status, _, err = run_cli(
            "export", "--model", str(DEFAULT_MODEL), "--out", str(tmp_path / "o"), "--eval-results", "r.json"
        )
        assert_one_line_error(status, err, "--eval-results", "--repo-id")

    def test_an_eval_file_of_another_kind(self, tmp_path):
        other = tmp_path / "other.json"
        other.write_text("{}")
        status, _, err = run_cli(
            "export",
            *("--model", str(DEFAULT_MODEL), "--out", str(tmp_path / "o"), "--no-verify"),
            *("--repo-id", "someone/x", "--eval-results", str(other)),
        )
        assert_one_line_error(status, err, str(other), "bridge mode")
        assert not (tmp_path / "o").exists()


HANDLER_PROCESS = """
import base64, json, sys
sys.modules["videotgb"] = None
sys.path.insert(0, sys.argv[1])  # as Inference Endpoints imports the repository's handler.py
from handler import EndpointHandler

handler = EndpointHandler(sys.argv[1])
question = sys.argv[3]
by_path = handler({"inputs": {"video": sys.argv[2], "question": question}, "parameters": {"max_new_tokens": 4}})
data = base64.b64encode(open(sys.argv[2], "rb").read()).decode()
by_base64 = handler({"inputs": {"video": data, "question": question}})
try:
    handler({"inputs": {"video": "not a video", "question": question}})
except ValueError as error:
    refused = str(error)
print(json.dumps({"path": by_path, "base64": by_base64, "refused": refused}))
"""


@pytest.mark.slow
def test_the_endpoint_handler_answers_given_a_path_and_given_base64(exported, tmp_path):
    from conftest import run_fresh_python

    from videotgb.synthetic import encode_scene

    assert {line.split(">=")[0] for line in (exported / "requirements.txt").read_text().splitlines()} == {
        "transformers",
        "av",
        "opencv-python-headless",  # the shipped model's flow is OpenCV's DIS
    }
    scene = demo_scene(recipe_of(DEFAULT_MODEL))
    video = tmp_path / "video.mp4"
    video.write_bytes(encode_scene(scene))
    result = run_fresh_python(HANDLER_PROCESS, str(exported), str(video), scene.question, tmp_path=tmp_path)
    answered = json.loads(result.stdout.strip().splitlines()[-1])
    assert answered["path"]["answer"] == answered["base64"]["answer"] == scene.answer
    assert answered["path"]["keyframe_timestamps"] == answered["base64"]["keyframe_timestamps"]
    assert len(answered["path"]["keyframe_indices"]) == 4
    assert "neither a URL, an existing path, nor base64" in answered["refused"]


def test_a_conversion_report_and_a_lora_adapter_are_carried_and_a_pickled_adapter_refused(tmp_path):
    source = shutil.copytree(DEFAULT_MODEL, tmp_path / "converted")
    (source / "conversion_report.json").write_text('{"checkpoint": "release.ckpt"}')
    (source / "lora_adapter").mkdir()
    (source / "lora_adapter" / "adapter_config.json").write_text("{}")
    (source / "lora_adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    out = export(source, tmp_path / "hub")
    carried = ("conversion_report.json", "lora_adapter/adapter_config.json", "lora_adapter/adapter_model.safetensors")
    for name in carried:
        assert (out / name).read_bytes() == (source / name).read_bytes()
    assert set(carried) <= set(check_export(out)["files"])
    (source / "lora_adapter" / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ExportError, match="pickle files lora_adapter/adapter_model.bin"):
        export(source, tmp_path / "hub-2")
    assert not (tmp_path / "hub-2").exists()
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []  # no staging left behind


def test_a_hub_id_source_is_exported_with_its_carried_files_from_the_cache(tmp_path):
    """A Hub id goes through huggingface_hub's cache (offline here): the weights, processor and carried files,
    `lora_adapter/` included, come from the cached snapshot."""
    import os
    import subprocess
    import sys

    cache = tmp_path / "hub-cache"
    repo = cache / "models--someone--videotgb-converted"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = shutil.copytree(DEFAULT_MODEL, repo / "snapshots" / commit)
    (snapshot / "recipe.json").unlink()
    (snapshot / "conversion_report.json").write_text('{"checkpoint": "release.ckpt"}')
    (snapshot / "lora_adapter").mkdir()
    (snapshot / "lora_adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for absent in ("qformer_tokenizer/config.json", "bridge_tokenizer/config.json"):
        # what an online load leaves behind: AutoTokenizer asks the Hub for a sub-tokenizer's config.json, and the
        # cache records that the repo has none (transformers' own behaviour, as for InstructBLIP's qformer_tokenizer)
        (repo / ".no_exist" / commit / absent).parent.mkdir(parents=True, exist_ok=True)
        (repo / ".no_exist" / commit / absent).touch()
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    out = tmp_path / "hub"
    result = subprocess.run(
        [sys.executable, "-m", "videotgb.cli", "export", "--model", "someone/videotgb-converted", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("conversion_report.json", "lora_adapter/adapter_model.safetensors", "model.safetensors"):
        assert (out / name).read_bytes() == (snapshot / name).read_bytes()
    assert json.loads((out / MANIFEST_NAME).read_text())["source"] == "someone/videotgb-converted"


def test_the_card_model_index_carries_eval_score_results_with_their_judge(tmp_path):
    """results.json made by `videotgb eval score` with the loopback judge: every metric of every benchmark reaches
    the model-index, judged ones naming the judge model the server reported."""
    from huggingface_hub import ModelCard
    from judge_server import JudgeServer, serve
    from test_eval_score import SCRIPT, judge_flags, write_predictions

    from videotgb.evaluation.score import main as score_main

    predictions = write_predictions(tmp_path / "predictions.jsonl")
    with serve(JudgeServer(script=SCRIPT)) as server:
        flags = ["--predictions", str(predictions), "--out", str(tmp_path / "scores"), "--no-progress"]
        assert score_main([*flags, *judge_flags(server.url, tmp_path / "cache")]) == 0
    results = json.loads((tmp_path / "scores" / "results.json").read_text())
    out = export(
        DEFAULT_MODEL,
        tmp_path / "hub",
        repo_id="someone/videotgb-tiny",
        eval_files=[tmp_path / "scores" / "results.json"],
    )
    card = ModelCard.load(out / "README.md")
    index = {(r.dataset_name, r.metric_name): r for r in card.data.eval_results}
    expected = {
        (benchmark, key): value
        for benchmark, entry in results["benchmarks"].items()
        for key, value in entry["metrics"].items()
        if value is not None
    }
    assert len(index) == len(expected)
    judged = index[("msvd_qa", "judged accuracy (Video-ChatGPT protocol), judge judge-test-2024-01-25")]
    assert judged.metric_type == "accuracy" and judged.metric_config == "judge-test-2024-01-25"
    assert judged.metric_value == round(expected[("msvd_qa", "judge_accuracy")], 4)
    mc = index[("mc", "multiple-choice accuracy")]
    assert mc.metric_value == round(expected[("mc", "mc_accuracy")], 4)
