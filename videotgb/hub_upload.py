"""Export a VideoTGB checkpoint as a self-contained Hub folder, and check that it loads without the package.

    videotgb export --model videotgb/default_model --out hub/videotgb-tiny
    python -m videotgb.hub_upload --model runs/synthetic/model --out hub/videotgb-tiny --overwrite

`export` writes, into a new (or empty) folder: `config.json` whose `auto_map` names the remote-code classes for
`AutoConfig`, `AutoModel`, `AutoModelForImageTextToText` and `AutoProcessor`; the weights as safetensors (sharded
with `model.safetensors.index.json` above `max_shard_size`); the flat remote-code files; the processor, its
tokenizers and chat template; `generation_config.json`; the RAFT weights file when the processor's flow config
names one (copied into the folder, the config then naming it by its file name, which the processor resolves inside
the folder or Hub repo it is loaded from); the source's `recipe.json`, `conversion_report.json` and `lora_adapter/`
when it has them; with a repo id, the model card `README.md` (`model_card`: metadata through `ModelCardData`, a
usage snippet, how the model was made, a model-index from evaluation files); `handler.py` and `requirements.txt`
for Inference Endpoints (`videotgb.endpoint_handler`); and `export_manifest.json`, the list of
the files written with their sizes and SHA-256.

`verify` reads that manifest: it refuses a folder holding a pickle file (`.bin`, `.pt`, `.pth`, `.pkl`,
`.ckpt`), a file the export did not write, or a written file that changed; then it loads the folder in a fresh
Python process (offline, the `videotgb` package not importable, outside the repository) with `AutoModel` /
`AutoProcessor` and `trust_remote_code=True`, and answers a question about a synthetic video by running the card's
usage snippet (`USAGE_CODE`).

Not remote code: an exported folder never imports this module.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers.utils import logging

logger = logging.get_logger(__name__)

MANIFEST_NAME = "export_manifest.json"
MANIFEST_VERSION = 1
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
CARRIED_FILES = ("recipe.json", "conversion_report.json")
"""Files of the source folder that an export copies as they are (training recipe, conversion report)."""
CARRIED_FOLDERS = ("lora_adapter",)
"""Folders of the source that an export copies (a peft adapter kept by `videotgb convert-original --lora keep`)."""
HANDLER_NAME = "handler.py"
REQUIREMENTS_NAME = "requirements.txt"
DEFAULT_MAX_SHARD_SIZE = "5GB"
VERIFY_TIMEOUT_S = 600


class ExportError(ValueError):
    """A folder that is not an export (no manifest), or holds a pickle file, a file the export did not write, or a
    written file that changed; or a source that cannot be exported (RAFT weights that are not safetensors)."""


class VerifyError(ExportError):
    """The exported folder did not load or answer in a fresh process; the message holds that process's last lines."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[str]:
    """Every file under `folder`, as sorted POSIX paths relative to it."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


def _check_destination(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty `out` without `overwrite`, and, even with it, a non-empty folder that is not a previous
    export (replacing it would delete files this module did not write)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"{out} already holds files; choose an empty folder or pass --overwrite")
    if not (out / MANIFEST_NAME).is_file():
        raise FileExistsError(
            f"{out} holds files but no {MANIFEST_NAME}: --overwrite replaces only a previous export; choose an "
            "empty folder"
        )


def _source_file(source: str, name: str, revision: str | None) -> Path | None:
    """`name` in a checkpoint folder or (cached / downloadable) Hub repo, or None when it has none."""
    if os.path.isdir(source):
        path = Path(source) / name
        return path if path.exists() else None
    from transformers.utils import cached_file

    found = cached_file(
        source,
        name,
        revision=revision,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    return Path(found) if found else None


def _carry_raft_weights(processor, staging: Path):
    """A copy of `processor` whose flow config names its RAFT weights by file name, after copying that file into
    `staging`; `processor` itself when its flow config names none."""
    if processor.flow_config.get("raft_weights") is None:
        return processor
    weights = Path(processor.flow_settings().raft_weights)
    if weights.suffix != ".safetensors":
        raise ExportError(
            f"flow_config.raft_weights {weights}: only safetensors are exported; convert it with "
            "videotgb.optical_flow.save_raft_weights"
        )
    if not weights.is_file():
        raise FileNotFoundError(f"flow_config.raft_weights {weights}: no such file")
    shutil.copy2(weights, staging / weights.name)
    exported = copy.deepcopy(processor)
    exported.flow_config = dict(processor.flow_config, raft_weights=weights.name)
    exported._resolved_raft_weights = {}
    return exported


def _write_folder(model, processor, staging: Path, max_shard_size: str | int) -> None:
    """Model, processor, RAFT weights and a `config.json` whose `auto_map` names the processor too."""
    from transformers.dynamic_module_utils import custom_object_save

    model.save_pretrained(staging, max_shard_size=max_shard_size, safe_serialization=True)
    processor = _carry_raft_weights(processor, staging)
    processor.save_pretrained(staging)
    # transformers' mechanism: register the processor's class in a copy of the saved model config's auto_map (the
    # same `custom_object_save` the processor's own save ran, which also copies its module)
    config = copy.deepcopy(model.config)
    custom_object_save(processor, staging, config=config)
    config.save_pretrained(staging)


def _copy_extras(source: str, staging: Path, revision: str | None) -> None:
    """Copy the source's :data:`CARRIED_FILES` and :data:`CARRIED_FOLDERS`, from a folder or a Hub repo."""
    for name in CARRIED_FILES:
        found = _source_file(source, name, revision)
        if found is not None:
            shutil.copy2(found, staging / name)
    for name in CARRIED_FOLDERS:
        if os.path.isdir(source):
            if (Path(source) / name).is_dir():
                shutil.copytree(Path(source) / name, staging / name)
            continue
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(source, revision=revision, allow_patterns=[f"{name}/*"]))
        if (snapshot / name).is_dir():
            shutil.copytree(snapshot / name, staging / name)


def requirements(flow_estimator: str) -> list[str]:
    """What an Inference Endpoint needs beyond torch to run the exported folder: transformers, PyAV to decode videos,
    and the flow estimator's library (torchvision for RAFT, OpenCV otherwise), each at least the version here."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["transformers", "av", "torchvision" if flow_estimator.startswith("raft") else "opencv-python-headless"]
    lines = []
    for name in names:
        try:
            lines.append(f"{name}>={version(name)}")
        except PackageNotFoundError:
            lines.append(name)
    return lines


def _write_endpoint_files(staging: Path) -> None:
    """`handler.py` (this package's `endpoint_handler` module, which imports nothing from the package) and
    `requirements.txt` for Inference Endpoints."""
    from . import endpoint_handler

    shutil.copyfile(endpoint_handler.__file__, staging / HANDLER_NAME)
    flow = json.loads((staging / "processor_config.json").read_text(encoding="utf-8"))["flow_config"]
    (staging / REQUIREMENTS_NAME).write_text("\n".join(requirements(flow["estimator"])) + "\n", encoding="utf-8")


def _write_manifest(staging: Path, source: str) -> dict[str, Any]:
    files = {
        name: {"size": (staging / name).stat().st_size, "sha256": _sha256(staging / name)} for name in _files(staging)
    }
    manifest = {"version": MANIFEST_VERSION, "source": source, "files": files}
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def export(
    model_or_folder,
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    processor=None,
    revision: str | None = None,
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
    repo_id: str | None = None,
    license: str | None = None,
    eval_files=(),
    datasets=(),
    space_id: str | None = None,
) -> Path:
    """Write a self-contained Hub folder for a VideoTGB checkpoint into `out_dir` (see the module docstring).

    Args:
        model_or_folder: a checkpoint folder or Hub id (its model and processor are loaded, safetensors only), or a
            `VideoTGBForConditionalGeneration`, then with `processor`.
        out_dir: folder to write: absent or empty, or with `overwrite` a previous export (replaced as a whole).
        overwrite: replace a previous export in `out_dir`.
        processor: the `VideoTGBProcessor` to export with a model object.
        revision: Hub revision of a Hub id.
        max_shard_size: weights above this are split into shards with `model.safetensors.index.json`.
        repo_id: the Hub repo (``owner/name``) the folder is for; with it the folder gets its model card
            (`README.md`, :func:`model_card`) whose usage snippet names it.
        license: the card's license id (e.g. ``apache-2.0``); left out of the card when None.
        eval_files: `videotgb eval score` results.json files or `videotgb synthetic eval --output` files for the
            card's model-index (:func:`eval_results`).
        datasets: Hub dataset ids the model was trained on, for the card's ``datasets`` field.
        space_id: a Hub Space running the app on this model: the card links to it ("Try it in a browser").

    The folder is written next to `out_dir` first and moved into place once complete, so a failed export leaves
    `out_dir` as it was. Returns `out_dir` as a Path.
    """
    out = Path(out_dir)
    _check_destination(out, overwrite)
    if repo_id is not None:
        check_repo_id(repo_id)
    elif eval_files or datasets or space_id:
        raise ValueError("--eval-results, --datasets and --space-id go into the model card, which needs --repo-id")
    if space_id is not None:
        check_repo_id(space_id, "--space-id")
    if isinstance(model_or_folder, (str, os.PathLike)):
        from .cli import load

        if processor is not None:
            raise ValueError("processor is taken from the checkpoint when model_or_folder is a folder or Hub id")
        source = os.fspath(model_or_folder)
        model, processor = load(source, dtype="auto", device="cpu", revision=revision)
    else:
        if processor is None:
            raise ValueError("export of a model object needs its processor (processor=...)")
        model, source = model_or_folder, f"<{type(model_or_folder).__name__} object>"
        processor.check_model_config(model.config)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        _write_folder(model, processor, staging, max_shard_size)
        if isinstance(model_or_folder, (str, os.PathLike)):
            _copy_extras(source, staging, revision)
        _write_endpoint_files(staging)
        _write_example(model, processor, staging)
        if repo_id is not None:
            card = model_card(
                staging, repo_id, license=license, eval_files=eval_files, datasets=datasets, space_id=space_id
            )
            card.save(staging / CARD_NAME)
        pickles = [name for name in _files(staging) if name.endswith(PICKLE_SUFFIXES)]
        if pickles:
            raise ExportError(f"{source}: the export would hold pickle files {', '.join(pickles)}")
        _write_manifest(staging, source)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    logger.info("exported %s into %s", source, out)
    return out


def check_export(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's manifest, after checking that it holds no pickle file, no file the export did not write, and
    every written file unchanged; ExportError naming the file otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    present = _files(folder)
    pickles = [name for name in present if name.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise ExportError(f"{folder}: refusing pickle files {', '.join(pickles)} (only safetensors are exported)")
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ExportError(f"{folder}: no {MANIFEST_NAME}; make the folder with `videotgb export`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        written = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ExportError(f"{manifest_path}: not an export manifest ({error})") from None
    if manifest.get("version") != MANIFEST_VERSION:
        raise ExportError(f"{manifest_path}: version {manifest.get('version')!r}, expected {MANIFEST_VERSION}")
    unexpected = [name for name in present if name != MANIFEST_NAME and name not in written]
    if unexpected:
        raise ExportError(f"{folder}: files the export did not write: {', '.join(unexpected)}")
    missing = [name for name in written if name not in present]
    if missing:
        raise ExportError(f"{folder}: files of the export are missing: {', '.join(missing)}")
    for name, recorded in written.items():
        path = folder / name
        if path.stat().st_size != recorded["size"] or _sha256(path) != recorded["sha256"]:
            raise ExportError(f"{path}: changed since the export (size or SHA-256 differs from {MANIFEST_NAME})")
    return manifest


USAGE_CODE = """\
import torch
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained({repo}, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained({repo}, trust_remote_code=True)
clip = processor.load_video({video})  # needs PyAV: pip install av
inputs = processor([{question}], videos=[clip])
with torch.inference_mode():
    output = model.generate(**inputs, max_new_tokens=16, do_sample=False, return_dict_in_generate=True)
print("answer:", processor.batch_decode(output.sequences, skip_special_tokens=True)[0].strip())
print("keyframes (s):", [float(clip.candidate_timestamps[i]) for i in output.keyframe_indices[0].tolist()])
"""
"""How to answer a question with an exported model: the model card shows it and `verify` runs it (the repo id or
folder, the video and the question filled in as JSON strings)."""


def usage_code(repo: str, video: str, question: str) -> str:
    """:data:`USAGE_CODE` for this repo id (or folder), video file and question."""
    return USAGE_CODE.format(repo=json.dumps(repo), video=json.dumps(video), question=json.dumps(question))


FRESH_PROCESS = """\
import json, sys
sys.modules["videotgb"] = None  # the package must not be needed: importing it now raises ImportError
{usage}print(json.dumps({{
    "answer": processor.batch_decode(output.sequences, skip_special_tokens=True)[0].strip(),
    "keyframe_timestamps": [float(clip.candidate_timestamps[i]) for i in output.keyframe_indices[0].tolist()],
    "model_module": type(model).__module__,
    "processor_module": type(processor).__module__,
}}))
"""
"""The script `verify` runs in a fresh interpreter: the usage code, then one JSON line with its answer, keyframe times
and the modules its classes came from."""


EXAMPLE_FOLDER = "examples"
EXAMPLE_VIDEO = f"{EXAMPLE_FOLDER}/video.mp4"
EXAMPLE_PICTURE = f"{EXAMPLE_FOLDER}/keyframes.png"
EXAMPLE_RESULT = f"{EXAMPLE_FOLDER}/example.json"
EXAMPLE_MAX_NEW_TOKENS = 16
"""The export's worked example: a synthetic video, the exported model's answer and keyframes (the card's widget entry
and picture), which `verify` must reproduce in a fresh process; the same token budget as :data:`USAGE_CODE`."""


def _example_scene(folder: Path):
    """The example's synthetic scene: the demo's scene for a model of the synthetic recipe (its ``recipe.json``), else
    a short scene of the generator's defaults."""
    from .demo import demo_scene, recipe_of
    from .synthetic import SyntheticConfig, make_scene

    recipe = recipe_of(folder)
    if recipe is not None:
        return demo_scene(recipe)
    return make_scene(SyntheticConfig(num_videos={"test": 1}, num_frames=64, event_frames=16), "test", 0)


def _write_example(model, processor, staging: Path) -> dict[str, Any]:
    """Encode the example video into `staging`, answer it with the exported model in this process, draw its keyframes
    over the bridge's span probability, and record the result (:data:`EXAMPLE_RESULT`)."""
    from .demo import plot_demo, run_demo
    from .synthetic import encode_scene

    scene = _example_scene(staging)
    (staging / EXAMPLE_FOLDER).mkdir()
    (staging / EXAMPLE_VIDEO).write_bytes(encode_scene(scene))
    result = run_demo(model, processor, staging / EXAMPLE_VIDEO, scene.question, EXAMPLE_MAX_NEW_TOKENS)
    result.gold, result.true_span_s = scene.answer, scene.events[scene.asked].span_seconds(scene.fps)
    plot_demo(result, staging / EXAMPLE_PICTURE)
    example = {
        "video": EXAMPLE_VIDEO,
        "question": scene.question,
        "answer": result.answer,
        "gold": scene.answer,
        "keyframe_timestamps": [round(seconds, 4) for seconds in result.keyframe_timestamps],
        "true_span_s": [round(seconds, 4) for seconds in result.true_span_s],
        "picture": EXAMPLE_PICTURE,
    }
    (staging / EXAMPLE_RESULT).write_text(json.dumps(example, indent=2) + "\n", encoding="utf-8")
    return example


def read_example(folder: str | os.PathLike) -> dict[str, Any]:
    """The example an export answered (:data:`EXAMPLE_RESULT`); ExportError when the folder has none."""
    path = Path(folder) / EXAMPLE_RESULT
    if not path.is_file():
        raise ExportError(f"{folder}: no {EXAMPLE_RESULT}; make the folder with `videotgb export`")
    return json.loads(path.read_text(encoding="utf-8"))


def verify(folder: str | os.PathLike, timeout_s: float = VERIFY_TIMEOUT_S) -> dict[str, Any]:
    """Check an exported folder (:func:`check_export`), then load it in a fresh Python process (offline, without the
    `videotgb` package, outside the repository, with an empty remote-code module cache) through `AutoModel` /
    `AutoProcessor` with `trust_remote_code=True` and answer the export's example question about its example video.

    Returns ``{"question", "answer", "keyframe_timestamps", "model_module", "processor_module"}``; VerifyError with
    the process's last stderr lines when it fails, when it does not load the folder's own code, or when its answer
    differs from the one the export recorded (:data:`EXAMPLE_RESULT`, the card's widget output).
    """
    folder = Path(folder).resolve()
    check_export(folder)
    example = read_example(folder)
    question = example["question"]
    with tempfile.TemporaryDirectory(prefix="videotgb-verify-") as work:
        video = Path(work) / "video.mp4"
        shutil.copyfile(folder / example["video"], video)
        environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        environment.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_MODULES_CACHE=str(Path(work) / "modules"))
        try:
            result = subprocess.run(
                [sys.executable, "-c", FRESH_PROCESS.format(usage=usage_code(str(folder), str(video), question))],
                cwd=work,
                env=environment,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise VerifyError(
                f"{folder}: loading and answering took over {timeout_s:.0f} s in a fresh process"
            ) from None
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise VerifyError(f"{folder} did not load and answer in a fresh process (exit {result.returncode}):\n{tail}")
    answered = json.loads(lines[-1])  # JSON: an answer's own line breaks are escaped there
    if not answered["model_module"].startswith("transformers_modules"):
        raise VerifyError(f"{folder}: the fresh process loaded {answered['model_module']}, not the folder's code")
    if answered["answer"] != example["answer"]:
        raise VerifyError(
            f"{folder}: the fresh process answered {answered['answer']!r} about {example['video']}, the export "
            f"recorded {example['answer']!r} in {EXAMPLE_RESULT}"
        )
    return {"question": question, **answered}


CARD_NAME = "README.md"
PAPER = "Efficient Temporal Extrapolation of Multimodal Large Language Models with Temporal Grounding Bridge"
"""The paper's published title (EMNLP 2024 main conference, ACL Anthology 2024.emnlp-main.556; arXiv 2402.16050)."""
CITATION = """\
@inproceedings{wang-etal-2024-efficient,
  title     = {Efficient Temporal Extrapolation of Multimodal Large Language Models with Temporal Grounding Bridge},
  author    = {Wang, Yuxuan and Wang, Yueqian and Wu, Pengfei and Liang, Jianxin and Zhao, Dongyan and Liu, Yang and
               Zheng, Zilong},
  booktitle = {Proceedings of the 2024 Conference on Empirical Methods in Natural Language Processing},
  month     = nov,
  year      = {2024},
  address   = {Miami, Florida, USA},
  publisher = {Association for Computational Linguistics},
  pages     = {9972--9987},
  url       = {https://aclanthology.org/2024.emnlp-main.556/},
  doi       = {10.18653/v1/2024.emnlp-main.556},
  eprint    = {2402.16050},
  archivePrefix = {arXiv}
}"""


def check_repo_id(repo_id: str, flag: str = "--repo-id") -> None:
    """ValueError naming `flag` unless `repo_id` is a valid ``owner/name`` Hub repo id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"{flag} {repo_id!r} is not a Hub repo id: {error}") from None
    if repo_id.count("/") != 1:
        raise ValueError(f"{flag} {repo_id!r}: expected owner/name")


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


_SCORE_METRICS = {
    # key in `videotgb eval score`'s results.json -> (model-index metric type, name)
    "judge_accuracy": ("accuracy", "judged accuracy (Video-ChatGPT protocol)"),
    "judge_score": ("score", "judged score, 0-5 (Video-ChatGPT protocol)"),
    "exact_match": ("exact_match", "exact match after normalisation"),
    "token_f1": ("f1", "token F1"),
    "mc_accuracy": ("accuracy", "multiple-choice accuracy"),
    "miou": ("mean_iou", "temporal mIoU of the bridge's span"),
    "recall@0.3": ("recall", "temporal R@0.3 of the bridge's span"),
    "recall@0.5": ("recall", "temporal R@0.5 of the bridge's span"),
}


def eval_results(paths) -> list:
    """`huggingface_hub.EvalResult`s (the card's model-index) from evaluation result files, each either
    `videotgb eval score`'s ``results.json`` (every metric of every benchmark; judged metrics name their judge model
    as the server reported it) or a `videotgb synthetic eval --output` file (the accuracy of the bridge's keyframes on
    its split). ValueError naming a file of neither kind."""
    from huggingface_hub import EvalResult

    results = []
    for path in paths:
        data = _read_json(Path(path))
        if isinstance(data, dict) and data.get("format") == "videotgb-eval-results":
            for benchmark, entry in sorted(data["benchmarks"].items()):
                judge = entry.get("judge") or {}
                judge_model = judge.get("model") or judge.get("requested_model")
                for key, value in entry["metrics"].items():
                    if key not in _SCORE_METRICS or value is None or value != value:
                        continue
                    metric_type, label = _SCORE_METRICS[key]
                    judged = key.startswith("judge_")
                    results.append(
                        EvalResult(
                            task_type="video-text-to-text",
                            task_name="Video question answering",
                            dataset_type=benchmark,
                            dataset_name=benchmark,
                            metric_type=metric_type,
                            metric_name=f"{label}, judge {judge_model}" if judged else label,
                            metric_config=str(judge_model) if judged else None,
                            metric_value=round(float(value), 4),
                        )
                    )
        elif isinstance(data, dict) and "bridge" in data.get("modes", {}):
            split = data["settings"]["split"]
            results.append(
                EvalResult(
                    task_type="video-text-to-text",
                    task_name="Video question answering",
                    dataset_type="videotgb-synthetic",
                    dataset_name=f"VideoTGB synthetic videos ({split} split)",
                    dataset_split=split,
                    metric_type="accuracy",
                    metric_name=f"exact-match accuracy, K = {data['settings']['num_keyframes']} keyframes from the "
                    "bridge",
                    metric_value=round(float(data["modes"]["bridge"]["accuracy"]), 4),
                )
            )
        else:
            raise ValueError(
                f"{path}: neither a `videotgb eval score` results.json nor a `videotgb synthetic eval` result file "
                "with the bridge mode"
            )
    return results


def widget_example(repo_id: str, example: dict[str, Any]) -> dict[str, Any]:
    """The card's ``widget`` entry for the export's example: the Hub's documented widget-example schema for an asset
    and a text (``src``, ``text``, ``example_title``, ``output.text`` — the form visual question answering uses; the
    Hub lists no video-text-to-text widget of its own), with the answer the exported model actually gave."""
    return {
        "src": f"https://huggingface.co/{repo_id}/resolve/main/{example['video']}",
        "text": example["question"],
        "example_title": "Synthetic video: which shape moved?",
        "output": {"text": example["answer"]},
    }


def model_card(
    folder: str | os.PathLike,
    repo_id: str,
    license: str | None = None,
    eval_files=(),
    datasets=(),
    space_id: str | None = None,
):
    """The `huggingface_hub.ModelCard` of an exported folder: metadata through `ModelCardData` (library, pipeline
    tag, base models of a converted release, datasets, license, tags, the widget example, model-index from
    `eval_files`), what the model is with the example's keyframe picture, a usage snippet naming `repo_id`, how it was
    made (its `recipe.json` or `conversion_report.json`), limitations, citation.

    Args:
        folder: the export (with its example, :data:`EXAMPLE_RESULT`).
        repo_id: the Hub repo (``owner/name``) the card is for.
        license: license id, or None to leave it out.
        eval_files: evaluation result files for the model-index (:func:`eval_results`).
        datasets: Hub dataset ids the model was trained on, for the ``datasets`` field.
        space_id: a Hub Space running the app on this model (`videotgb export-space`): the card links to it.
    """
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    recipe = _read_json(folder / "recipe.json")
    report = _read_json(folder / "conversion_report.json")
    example = read_example(folder)
    name = repo_id.rsplit("/", 1)[-1]
    data = ModelCardData(
        model_name=name,
        library_name="transformers",
        pipeline_tag="video-text-to-text",
        license=license,
        base_model=[report["base_vlm"], report["bert"]] if report else None,
        datasets=list(datasets) or None,
        tags=["videotgb", "video-question-answering", "temporal-grounding", "custom_code"],
        widget=[widget_example(repo_id, example)],
        eval_results=eval_results(eval_files) or None,
    )
    keyframes, candidates = config["num_keyframes"], config["num_candidate_frames"]
    question = example["question"]
    if recipe is not None:
        made = (
            f"{recipe['description']}, with these commands (no true span is used in training):\n\n```bash\n"
            + "\n".join(recipe["commands"])
            + "\n```"
        )
        limits = (
            "A tiny model (64 x 64 frames, word-level tokenizers) trained only on synthetic videos of moving shapes "
            "and questions about their motion: it shows the mechanism, it does not understand real videos."
        )
    elif report is not None:
        made = (
            f"Converted from the original release `{Path(report['checkpoint']).name}` (base `{report['base_vlm']}`, "
            f"the bridge's question tokenizer `{report['bert']}`). The bridge runs in `{report['bridge_mode']}` mode: "
            "every one of its layers reads flow and question together, as the release's evaluation code ran it. LoRA: "
            f"`{report['lora']}`. Every key of the release and where it went is in `conversion_report.json`."
        )
        limits = "The original release's behaviour, including its answers' biases; see the paper's limitations."
    else:
        made = "Not recorded in the exported folder."
        limits = "Not evaluated here; check it on your own videos before relying on it."
    try_it = (
        ""
        if space_id is None
        else f"\n**Try it in a browser:** [the {space_id} Space](https://huggingface.co/spaces/{space_id}) (upload a "
        "video, ask, and see the keyframes the model read).\n"
    )
    stamps = ", ".join(f"{seconds:.2f} s" for seconds in example["keyframe_timestamps"])
    start, end = example["true_span_s"]
    example_text = (
        f"Asked *{example['question']}* about a synthetic video (`{example['video']}`) whose event lies at "
        f"{start:.2f}–{end:.2f} s, this model answered **{example['answer']}** (gold: {example['gold']}) from keyframes "
        f"at {stamps}. The picture shows those keyframes, and under them the bridge's probability that each moment "
        "lies in the span it predicted, with the true event shaded."
    )
    body = f"""
# {name}

A [VideoTGB](https://arxiv.org/abs/2402.16050) model (EMNLP 2024, *{PAPER}*). A small Temporal Grounding Bridge
reads cheap optical flow over {candidates} candidate frames and the question, predicts where in the video the answer
lies, and picks K = {keyframes} keyframes there; only those go through the vision tower and the language model, so
long videos cost about as much as short ones.
{try_it}
## Example

{example_text}

![The example's keyframes over the bridge's span probability]({EXAMPLE_PICTURE})

## Usage

Needs `transformers`, `torch`, `torchvision` and `av`; the model's code comes with the repository
(`trust_remote_code=True`).

```python
{usage_code(repo_id, "video.mp4", question)}```

## How it was made

{made}

## Limitations

{limits}

## Citation

```bibtex
{CITATION}
```
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


STALE_SUFFIXES = (".safetensors", ".json", ".py", ".txt", ".model", *PICKLE_SUFFIXES)
"""Files of the kinds an export writes (weights, configs, code, tokenizer files) and pickles: a push deletes those
the Hub repo holds but the export does not, so no stale shard, config or code is loaded beside the new ones."""


@dataclass
class PushPlan:
    """What :func:`push` commits: every file of the export with its size, and (after contacting the Hub) the stale
    files it deletes in the same commit."""

    folder: Path
    repo_id: str
    files: dict[str, int]
    deletions: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """The files (and deletions) as printed lines, with the total size."""
        width = max(len(name) for name in self.files)
        lines = [f"  {name:<{width}}  {_size(size):>9}" for name, size in self.files.items()]
        lines.append(f"{len(self.files)} files, {_size(sum(self.files.values()))}")
        lines += [f"  delete {name} (in the repo, not in this export)" for name in self.deletions]
        return "\n".join(lines)


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def plan_push(folder: str | os.PathLike, repo_id: str) -> PushPlan:
    """Check the repo id and the export (:func:`check_export`, the model card present and written for `repo_id`)
    and list what a push would commit; nothing is contacted."""
    check_repo_id(repo_id)
    folder = Path(folder)
    manifest = check_export(folder)
    card = folder / CARD_NAME
    if not card.is_file():
        raise ExportError(f"{folder}: no model card ({CARD_NAME}); export with --repo-id {repo_id}")
    if json.dumps(repo_id) not in card.read_text(encoding="utf-8"):
        raise ExportError(
            f"{card}: the model card was written for another repo; export again with --repo-id {repo_id}"
        )
    files = {name: recorded["size"] for name, recorded in manifest["files"].items()}
    files[MANIFEST_NAME] = (folder / MANIFEST_NAME).stat().st_size
    return PushPlan(folder=folder, repo_id=repo_id, files=dict(sorted(files.items())))


def push(
    folder: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    dry_run: bool = False,
    endpoint: str | None = None,
) -> tuple[PushPlan, Any]:
    """Upload an export to the Hub as one commit.

    The folder is checked first (:func:`plan_push`: a valid repo id, nothing the export did not write, no pickle, no
    changed file, a model card for `repo_id`). With `dry_run` that is all: the plan is returned with commit info None
    and nothing is contacted. Otherwise the repo is created if absent (`private` applies only then), the branch
    `revision` is created from the default branch if absent (not with `create_pr`), and one commit adds every file of
    the export and deletes the repo's stale files of the export's kinds (:data:`STALE_SUFFIXES`) — either all of it
    lands or none.

    Args:
        folder: the export (`videotgb export --repo-id ...`).
        repo_id: ``owner/name``.
        token: a Hub token; by default ``HF_TOKEN`` or the one `hf auth login` stored. It is never printed or logged.
        private: make a new repo private.
        revision: the branch to commit to (default: the repo's default branch); with `create_pr`, the branch the pull
            request targets.
        commit_message: the commit's title.
        create_pr: open a pull request with the commit instead of committing to the branch.
        dry_run: only check and list.
        endpoint: the Hub's URL (default: ``HF_ENDPOINT`` or huggingface.co).

    Returns ``(plan, commit_info)``; PermissionError naming the ways to give a token when none is found.
    """
    plan = plan_push(folder, repo_id)
    if dry_run:
        return plan, None
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token
    from huggingface_hub.errors import RevisionNotFoundError

    token = token or get_token()
    if not token:
        raise PermissionError(
            f"pushing to {repo_id} needs a Hub token with write access: set HF_TOKEN or run `hf auth login` "
            "(--dry-run lists the files without one)"
        )
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    try:
        present = api.list_repo_files(repo_id, revision=revision)
    except RevisionNotFoundError:
        raise ValueError(
            f"--revision {revision}: no such branch in {repo_id} to open a pull request against"
        ) from None
    plan.deletions = sorted(name for name in present if name not in plan.files and name.endswith(STALE_SUFFIXES))
    operations = [CommitOperationAdd(name, plan.folder / name) for name in plan.files]
    operations += [CommitOperationDelete(name) for name in plan.deletions]
    info = api.create_commit(
        repo_id,
        operations,
        commit_message=commit_message or f"Upload VideoTGB export ({len(plan.files)} files)",
        revision=revision,
        create_pr=create_pr,
    )
    logger.info("pushed %s to %s: %s", plan.folder, repo_id, info.pr_url or info.commit_url)
    return plan, info


def add_hub_parsers(commands) -> None:
    """Add `videotgb export` and `videotgb push` to the `videotgb` sub-command parsers."""
    parser = commands.add_parser(
        "export",
        help="write a self-contained Hub folder for a checkpoint and check it loads without the package",
        description="Write a Hub folder (safetensors, remote code, processor, auto_map, RAFT weights, "
        f"{MANIFEST_NAME}) for a VideoTGB checkpoint, then load it in a fresh process without the videotgb package "
        "(offline, AutoModel / AutoProcessor with trust_remote_code=True) and answer a question about a synthetic "
        "video.",
    )
    parser.add_argument(
        "--model", required=True, metavar="PATH_OR_HUB_ID", help="VideoTGB checkpoint folder or Hub id"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write (empty unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous export in --out")
    parser.add_argument("--no-verify", action="store_true", help="skip the fresh-process load and answer")
    parser.add_argument("--revision", default=None, help="Hub revision of --model")
    parser.add_argument(
        "--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE, help="split weights above this (default: %(default)s)"
    )
    parser.add_argument(
        "--repo-id", default=None, metavar="OWNER/NAME", help="the Hub repo the folder is for: writes its model card"
    )
    parser.add_argument("--license", default=None, help="license id for the model card (e.g. apache-2.0)")
    parser.add_argument(
        "--eval-results",
        nargs="+",
        default=[],
        metavar="FILE",
        help="`videotgb eval score` results.json files (every metric, judged ones with their judge model) or "
        "`videotgb synthetic eval --output` files (the bridge's accuracy): the model card's model-index",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=[],
        metavar="DATASET_ID",
        help="Hub dataset ids the model was trained on, for the model card's datasets field",
    )
    parser.add_argument(
        "--space-id",
        default=None,
        metavar="OWNER/NAME",
        help="a Hub Space running `videotgb app` on this model (`videotgb export-space`): the card links to it",
    )
    parser.set_defaults(run=_export_command)
    add_push_parser(commands)


def add_push_parser(commands) -> None:
    """Add `videotgb push` to the `videotgb` sub-command parsers."""
    parser = commands.add_parser(
        "push",
        help="upload an export to the Hugging Face Hub as one commit",
        description="Check an export (`videotgb export --repo-id ...`: nothing it did not write, no pickle, no changed "
        "file, a model card for --repo-id) and upload it to the Hub as one commit, which also deletes the repo's stale "
        "weights, configs and code. The token comes from HF_TOKEN or `hf auth login` (never from the command line) and "
        "is never printed. --dry-run lists the files and sizes without contacting the Hub.",
    )
    parser.add_argument("--folder", required=True, metavar="DIR", help="the export to upload")
    parser.add_argument("--repo-id", required=True, metavar="OWNER/NAME", help="the Hub model repo")
    parser.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its)")
    parser.add_argument(
        "--revision", default=None, metavar="BRANCH", help="branch to commit to (created if absent); with "
        "--create-pr, the branch the pull request targets"
    )  # fmt: skip
    parser.add_argument("--commit-message", default=None, help="the commit's title")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--dry-run", action="store_true", help="check and list the files; upload nothing")
    parser.set_defaults(run=_push_command)


def _push_command(arguments: argparse.Namespace) -> int:
    plan, info = push(
        arguments.folder,
        arguments.repo_id,
        private=True if arguments.private else None,
        revision=arguments.revision,
        commit_message=arguments.commit_message,
        create_pr=arguments.create_pr,
        dry_run=arguments.dry_run,
    )
    print(f"{'would commit' if arguments.dry_run else 'committed'} to {arguments.repo_id}:")
    print(plan.describe())
    if info is None:
        print("dry run: nothing was uploaded")
    else:
        print(f"pull request: {info.pr_url}" if info.pr_url else f"commit: {info.commit_url}")
    return 0


def _export_command(arguments: argparse.Namespace) -> int:
    folder = export(
        arguments.model,
        arguments.out,
        overwrite=arguments.overwrite,
        revision=arguments.revision,
        max_shard_size=arguments.max_shard_size,
        repo_id=arguments.repo_id,
        license=arguments.license,
        eval_files=arguments.eval_results,
        datasets=arguments.datasets,
        space_id=arguments.space_id,
    )
    print(f"exported: {folder}")
    if not arguments.no_verify:
        answered = verify(folder)
        stamps = ", ".join(f"{seconds:.2f}s" for seconds in answered["keyframe_timestamps"])
        print(f"verified in a fresh process without the package: {answered['question']} -> {answered['answer']!r}")
        print(f"keyframes: {stamps}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m videotgb.hub_upload ARGS`: the same as `videotgb export ARGS`."""
    from .cli import main as cli_main

    return cli_main(["export", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
