"""Command line of videotgb.

videotgb answer --model PATH_OR_HUB_ID --video FILE --question "What happens after the goal?"
videotgb init --vlm BLIP2_OR_INSTRUCTBLIP --bert BERT --output DIR
videotgb convert-original --checkpoint RELEASE.ckpt --out DIR [--lora merge|keep] [--trust-pickle]
videotgb export --model PATH_OR_HUB_ID --out DIR [--overwrite] [--no-verify]
videotgb demo [--model PATH_OR_HUB_ID --video FILE --question TEXT] [--output DIR]
videotgb app [--model PATH_OR_HUB_ID] [--server-name ADDRESS --server-port PORT --share]     (Gradio page)
videotgb export-space --model OWNER/NAME --out DIR                                          (Hugging Face Space)
videotgb data build --source FORMAT=ANNOTATIONS.json --media-root DIR --output SHARDS_DIR
videotgb data flow --shards SHARDS_DIR --model CHECKPOINT --output FLOW_DIR
videotgb data pseudo-spans --shards SHARDS_DIR --model CHECKPOINT --output SPANS_DIR
videotgb synthetic generate --out DIR --seed 0 --num-videos 100 --frames 256 [--shards]
videotgb synthetic train --out DIR --seed 0
videotgb synthetic eval --model CHECKPOINT --data DIR [--split test] [--output results.json]
videotgb eval run --model CHECKPOINT (--questions Q.json --answers A.json | --multiple-choice FILE) --video-dir DIR
                  --predictions PREDICTIONS.jsonl     (or --synthetic DIR; resumes an interrupted run)

Errors that come from the inputs (a missing file, a folder that is not a VideoTGB checkpoint, an undecodable video,
a device this machine lacks) are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.utils import logging

logger = logging.get_logger(__name__)


class CheckpointError(OSError):
    """A `--model` that cannot be found: no such folder, and not a Hub id that is cached or can be fetched."""


@dataclass
class Answer:
    """What `answer_question` returns: the text and the keyframes it was read from."""

    text: str
    keyframe_indices: list[int]
    keyframe_timestamps: list[float]


def resolve_device(device: str | None) -> torch.device:
    """The torch device for `device` (default: CUDA when available, else CPU); ValueError when this machine lacks it."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"--device {device!r} is not a device name (cpu, cuda, cuda:1, mps, ...): {error}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this machine has no CUDA GPU that torch can use; use --device cpu")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    try:
        torch.empty(0, device=resolved)
    except (RuntimeError, AssertionError) as error:
        raise ValueError(f"--device {device}: not usable on this machine ({error})") from None
    return resolved


def check_checkpoint(model_name_or_path: str, revision: str | None = None) -> None:
    """Check, without building anything, that `model_name_or_path` is a VideoTGB checkpoint.

    Raises CheckpointError naming the input when it is neither an existing folder nor a Hub id that is cached or
    (online) can be fetched, and `WrongModelTypeError` when its `config.json` names another model type (BLIP-2 /
    InstructBLIP checkpoints are pointed to `videotgb init`).
    """
    from huggingface_hub import is_offline_mode, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    from transformers.utils import CONFIG_NAME, cached_file

    from .modeling_videotgb import VideoTGBForConditionalGeneration

    path = Path(model_name_or_path).expanduser()
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise CheckpointError(f"{model_name_or_path}: the folder has no {CONFIG_NAME}, so it is not a saved model")
    elif path.exists():
        raise CheckpointError(f"{model_name_or_path} is a file; --model takes a checkpoint folder or a Hub id")
    else:
        try:
            validate_repo_id(model_name_or_path)
        except HFValidationError:
            raise CheckpointError(f"{model_name_or_path}: no such folder (and not a valid Hub id)") from None
        if not isinstance(try_to_load_from_cache(model_name_or_path, CONFIG_NAME, revision=revision), str):
            if is_offline_mode():
                raise CheckpointError(
                    f"{model_name_or_path}: no such folder; not in the Hub cache (offline mode, HF_HUB_OFFLINE=1)"
                )
            try:
                cached_file(model_name_or_path, CONFIG_NAME, revision=revision)
            except OSError as error:
                reason = str(error).splitlines()[0]
                raise CheckpointError(
                    f"{model_name_or_path}: no such folder; not in the Hub cache; and the Hub did not give it: {reason}"
                ) from None
    VideoTGBForConditionalGeneration.check_model_type(model_name_or_path, revision=revision)


def load_processor(model_name_or_path: str, revision: str | None = None, frame_alignment: str | None = None):
    """The checkpoint's `VideoTGBProcessor`, after checking that it is a VideoTGB checkpoint; CheckpointError naming
    the folder when the processor saved with the model cannot be loaded (missing or broken files).
    `frame_alignment` (``"exact"`` / ``"keyframe"``) replaces the saved setting when given."""
    from .processing_videotgb import VideoTGBProcessor

    check_checkpoint(model_name_or_path, revision)
    overrides = {} if frame_alignment is None else {"frame_alignment": frame_alignment}
    try:
        return VideoTGBProcessor.from_pretrained(model_name_or_path, revision=revision, **overrides)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"--model {model_name_or_path}: cannot load the processor saved with the model (processor_config.json, "
            f"tokenizer.json, qformer_tokenizer/ and bridge_tokenizer/, written by processor.save_pretrained): "
            f"{reason}"
        ) from None


def load_model(
    model_name_or_path: str,
    dtype: str = "auto",
    device: str | torch.device | None = None,
    revision: str | None = None,
    **config_overrides,
):
    """The checkpoint's model (safetensors only) on `device`, in eval mode, after checking the folder and device;
    `config_overrides` (e.g. `num_keyframes=8`) change config fields, None values are ignored."""
    from .modeling_videotgb import VideoTGBForConditionalGeneration

    target = device if isinstance(device, torch.device) else resolve_device(device)
    check_checkpoint(model_name_or_path, revision)
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    overrides = {key: value for key, value in config_overrides.items() if value is not None}
    model = VideoTGBForConditionalGeneration.from_pretrained(
        model_name_or_path, dtype=torch_dtype, revision=revision, use_safetensors=True, **overrides
    )
    return model.to(target).eval()


def load(model_name_or_path: str, dtype: str = "auto", device: str | None = None, revision: str | None = None):
    """Model and processor from a local folder or a Hub id (safetensors only), in eval mode, checked against
    each other."""
    processor = load_processor(model_name_or_path, revision)
    model = load_model(model_name_or_path, dtype, device, revision)
    processor.check_model_config(model.config)
    return model, processor


def answer_question(model, processor, video, question: str, **generate_kwargs) -> Answer:
    """Answer one question about one video (path, bytes, file object or a clip from `processor.load_video`) with
    greedy decoding by default. Floating inputs are cast to `model.dtype`."""
    clip = processor.load_video(video)
    batch = processor([question], videos=[clip]).to(model.device)
    floating = {key: value.to(model.dtype) for key, value in batch.items() if value.is_floating_point()}
    generate_kwargs.setdefault("max_new_tokens", 64)
    output = model.generate(**batch | floating, return_dict_in_generate=True, **generate_kwargs)
    indices = output.keyframe_indices[0].tolist()
    return Answer(
        text=processor.batch_decode(output.sequences, skip_special_tokens=True)[0].strip(),
        keyframe_indices=indices,
        keyframe_timestamps=[float(clip.candidate_timestamps[index]) for index in indices],
    )


def _format_answer(answer: Answer) -> str:
    stamps = ", ".join(f"{seconds:.2f}s" for seconds in answer.keyframe_timestamps)
    return f"answer: {answer.text}\nkeyframes: {stamps} (candidates {answer.keyframe_indices})"


def _answer_command(arguments: argparse.Namespace) -> int:
    # Cheap checks first: a wrong device, video or folder is reported before any weights are read.
    device = resolve_device(arguments.device)
    video = Path(arguments.video)
    if not video.is_file():
        raise FileNotFoundError(f"--video {arguments.video}: no such file")
    processor = load_processor(arguments.model, arguments.revision, arguments.frame_alignment)
    clip = processor.load_video(video)
    if clip.alignment_note is not None:
        print(f"note: exact reading instead of keyframe-aligned: {clip.alignment_note}")
    model = load_model(arguments.model, arguments.dtype, device, arguments.revision)
    processor.check_model_config(model.config)
    generate_kwargs = {"max_new_tokens": arguments.max_new_tokens, "do_sample": False}
    if arguments.num_beams > 1:
        generate_kwargs["num_beams"] = arguments.num_beams
    print(_format_answer(answer_question(model, processor, clip, arguments.question, **generate_kwargs)))
    return 0


def _init_command(arguments: argparse.Namespace) -> int:
    from .init_checkpoint import check_output_folder, init_from_blip_and_bert

    check_output_folder(arguments.output, arguments.overwrite)
    bridge_overrides = {"flow_estimator": arguments.flow_estimator}
    if arguments.flow_size is not None:
        bridge_overrides["flow_size"] = arguments.flow_size
    config_fields = {
        key: value
        for key, value in {
            "num_candidate_frames": arguments.num_candidate_frames,
            "num_keyframes": arguments.num_keyframes,
            "frame_aggregation": arguments.frame_aggregation,
        }.items()
        if value is not None
    }
    hub_kwargs = {"revision": arguments.revision} if arguments.revision else {}
    init_from_blip_and_bert(
        arguments.vlm,
        arguments.bert,
        arguments.output,
        overwrite=arguments.overwrite,
        bridge_overrides=bridge_overrides,
        hub_kwargs=hub_kwargs,
        dtype=arguments.dtype if arguments.dtype == "auto" else getattr(torch, arguments.dtype),
        **config_fields,
    )
    print(f"wrote model and processor to {arguments.output}")
    return 0


def _demo_command(arguments: argparse.Namespace) -> int:
    from .demo import DEFAULT_MODEL, check_question, demo_scene, format_result, plot_demo, recipe_of, run_demo

    # Cheap checks first: flags, files and the folder are reported before any weights are read.
    model_path = arguments.model or str(DEFAULT_MODEL)
    if arguments.video is not None and arguments.question is None:
        raise ValueError("--video needs --question (the question to ask about it)")
    if arguments.video is not None and not Path(arguments.video).is_file():
        raise FileNotFoundError(f"--video {arguments.video}: no such file")
    if arguments.keyframes is not None and arguments.keyframes < 1:
        raise ValueError(f"--keyframes {arguments.keyframes}: must be a positive integer")
    device = resolve_device(arguments.device)
    processor = load_processor(model_path, arguments.revision)
    if arguments.keyframes is not None and arguments.keyframes > processor.num_candidate_frames:
        raise ValueError(
            f"--keyframes {arguments.keyframes}: more than the {processor.num_candidate_frames} candidate frames "
            "the model chooses from"
        )
    recipe = recipe_of(model_path) if Path(model_path).is_dir() else None
    output = Path(arguments.output)
    gold = true_span = None
    if arguments.video is None:
        if recipe is None:
            raise ValueError(
                f"--model {model_path}: not a model of `videotgb synthetic train` (no recipe.json), so there is no "
                "default video for it; give --video and --question"
            )
        from .synthetic import encode_scene

        scene = demo_scene(recipe)
        output.mkdir(parents=True, exist_ok=True)
        video = output / "demo.mp4"
        video.write_bytes(encode_scene(scene))
        question = arguments.question or scene.question
        asked = scene.events[scene.asked]
        true_span = asked.span_seconds(scene.fps)
        gold = scene.answer if question == scene.question else None
        print(
            f"video: {video} ({scene.num_frames} frames, {scene.num_frames / scene.fps:.1f} s at {scene.fps} fps, "
            f"{len(scene.events)} shapes that move)"
        )
    else:
        video, question = Path(arguments.video), arguments.question
    check_question(question, recipe)
    clip = processor.load_video(video)
    model = load_model(model_path, arguments.dtype, device, arguments.revision, num_keyframes=arguments.keyframes)
    processor.check_model_config(model.config)
    described = f" ({recipe['description']})" if recipe and recipe.get("description") else ""
    print(f"model: {arguments.model or 'videotgb/default_model'}{described}")
    result = run_demo(model, processor, clip, question)
    result.video, result.gold, result.true_span_s = str(video), gold, true_span
    print(format_result(result))
    picture = plot_demo(result, output / "demo.png")
    print(f"picture: {picture} (the keyframes, and the bridge's span probability over the whole video)")
    return 0


def _sources_from_arguments(arguments: argparse.Namespace) -> list:
    """`Source`s from ``--source [NAME:]FORMAT=PATH`` (repeatable) or ``--format`` with ``--annotations``, with
    ``--media-root`` given once for all of them or once per source, in order."""
    import re

    from .data import Source, parse_source

    if arguments.source and (arguments.format or arguments.annotations):
        raise ValueError("give either --source (repeatable) or --format with --annotations, not both")
    if arguments.source:
        specs = [parse_source(spec) for spec in arguments.source]
    elif arguments.format and arguments.annotations:
        specs = [(None, arguments.format, arguments.annotations)]
    else:
        raise ValueError("no input: give --source FORMAT=PATH (repeatable) or --format with --annotations")
    roots = arguments.media_root or []
    if len(roots) not in (0, 1, len(specs)):
        raise ValueError(
            f"--media-root is given {len(roots)} times for {len(specs)} sources: give it once or once each"
        )
    sources = []
    for number, (name, format_, path) in enumerate(specs):
        root = roots[0] if len(roots) == 1 else roots[number] if roots else None
        if root is None and format_ != "text":
            raise ValueError(f"--media-root is required for the {format_} source {path}")
        name = name or re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).stem)
        sources.append(Source(name, format_, Path(path), Path(root) if root and format_ != "text" else None))
    return sources


def _data_build_command(arguments: argparse.Namespace) -> int:
    from .data import build_shards, require_training_extra

    require_training_extra()
    manifest = build_shards(
        _sources_from_arguments(arguments),
        arguments.output,
        shard_size=arguments.shard_size,
        world_size=arguments.world_size,
        seed=arguments.seed,
        format_out=arguments.format_out,
        num_workers=arguments.num_workers,
        overwrite=arguments.overwrite,
        progress=not arguments.no_progress,
    )
    skipped = manifest["skipped"]
    reasons = ", ".join(f"{count} {reason}" for reason, count in skipped["reasons"].items() if count)
    kinds = ", ".join(f"{count} {kind}" for kind, count in manifest["kinds"].items() if count)
    print(
        f"wrote {manifest['records']} records ({kinds}) in {len(manifest['shards'])} {manifest['format']} shards, "
        f"{manifest['bytes']} bytes, to {arguments.output}"
    )
    print(f"skipped {skipped['total']} records" + (f" ({reasons}); see manifest.json" if reasons else ""))
    return 0


def _distributed_rank() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) from the environment torchrun sets ((0, 1) without it); with CUDA, this process's GPU
    becomes LOCAL_RANK's."""
    values = {}
    for name, default in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        text = os.environ.get(name, default)
        try:
            values[name] = int(text)
        except ValueError:
            raise ValueError(f"environment variable {name}={text!r}: expected an integer") from None
    if torch.cuda.is_available():
        torch.cuda.set_device(values["LOCAL_RANK"] % torch.cuda.device_count())
    return values["RANK"], values["WORLD_SIZE"]


def _report_side(manifest: dict, arguments: argparse.Namespace, rank: int, world_size: int) -> None:
    if not manifest["complete"]:
        print(
            f"rank {rank} of {world_size}: finished its side shards in {arguments.output}; the rank that finishes "
            "last writes the complete manifest.json"
        )
        return
    skipped = manifest["skipped"]
    reasons = ", ".join(f"{count} {reason}" for reason, count in skipped["reasons"].items() if count)
    print(
        f"wrote {manifest['kind']} for {manifest['rows']} of {manifest['kinds']['video']} video records in "
        f"{len(manifest['shards'])} side shards, {manifest['bytes']} bytes, to {arguments.output}"
    )
    print(f"skipped {skipped['total']} video records" + (f" ({reasons}); see manifest.json" if reasons else ""))


def _make_side_shards(arguments: argparse.Namespace, computer, rank: int, world_size: int) -> int:
    from .data.precompute import precompute_side_shards

    manifest = precompute_side_shards(
        arguments.shards,
        arguments.output,
        computer,
        rank=rank,
        world_size=world_size,
        overwrite=arguments.overwrite,
        progress=not arguments.no_progress,
    )
    _report_side(manifest, arguments, rank, world_size)
    return 0


def _data_flow_command(arguments: argparse.Namespace) -> int:
    from .data import require_training_extra
    from .data.precompute import FlowComputer, flow_bytes_per_video
    from .optical_flow import FlowConfig

    require_training_extra()
    rank, world_size = _distributed_rank()
    processor = load_processor(arguments.model, arguments.revision)
    computer = FlowComputer(processor, arguments.flow_dtype)
    size = FlowConfig.from_dict(processor.flow_config).size
    steps = processor.max_flow_steps
    print(
        f"flow of up to {steps} steps x 2 x {size} x {size} as {arguments.flow_dtype}: at most "
        f"{flow_bytes_per_video(steps, size, arguments.flow_dtype)} bytes per video before compression"
    )
    return _make_side_shards(arguments, computer, rank, world_size)


def _data_pseudo_spans_command(arguments: argparse.Namespace) -> int:
    from .data import require_training_extra
    from .data.precompute import PseudoSpanComputer, describe_model

    require_training_extra()
    rank, world_size = _distributed_rank()
    device = resolve_device(arguments.device)
    model, processor = load(arguments.model, arguments.dtype, str(device), arguments.revision)
    computer = PseudoSpanComputer(
        model,
        processor,
        model_description=describe_model(arguments.model, model),
        max_new_tokens=arguments.max_new_tokens,
        batch_size=arguments.batch_size,
        subtract_min=arguments.subtract_min,
    )
    return _make_side_shards(arguments, computer, rank, world_size)


_SIDE_DESCRIPTION = """\
{what}

Reads a complete shard folder of `videotgb data build` (--shards) and writes one Parquet side shard per
media shard (side-00003-of-00008.parquet goes with shard-00003-of-00008.*) into --output, with the
columns id, {columns}: one row per video record (image and text records have no row). Videos that do
not decode are skipped by id and counted in manifest.json, never fatal. The settings come from the
--model checkpoint's processor (frames, flow), exactly as training reads the videos online.

Several processes: `torchrun --nproc_per_node N -m videotgb.cli data {command} ...` (or RANK and
WORLD_SIZE in the environment): rank r makes the side shards i with i % N == r; no process group is
needed, and the rank that finishes last writes the complete manifest.json. A rerun resumes: finished
side shards are kept, interrupted ones are made again; a folder made with other settings or from
another build is refused unless --overwrite.

Training reads them with `videotgb-train --train_files SHARDS --side_files DIR [DIR ...]`.
See docs/data.md#side-shards.
"""


_DATA_BUILD_DESCRIPTION = """\
Read annotation files, check every record and its media, and write shards that
datasets.load_dataset(..., streaming=True) reads, media bytes inside, with a manifest.json
(settings, shards, counts, skipped record ids). Bad records (missing, empty or undecodable media,
media outside --media-root, malformed records) are skipped and counted, never replaced.
A rerun resumes: finished shards are kept; other inputs or settings need --overwrite.

annotation formats (--source FORMAT=PATH or --format FORMAT --annotations PATH):
  videoinstruct  Video-ChatGPT VideoInstruct-100K: [{"video_id", "q", "a"}], video file
                 <media-root>/<video_id>.mp4 (or .mkv .webm .avi .mov)
  llava          LLaVA image-instruct: [{"id", "image", "conversations": [{"from": "human"|"gpt",
                 "value"}]}], <image> placeholder in the first human turn
  videollava     Video-LLaVA mixed: as llava, each record with "video" or "image" (or neither: text)
  text           text-only: LLaVA records without media, or Alpaca {"instruction", "input", "output"}

example:
  videotgb data build --source videoinstruct=VideoInstruct100K.json --media-root videos \\
      --output shards --shard-size 1GB --world-size 8 --num-workers 8

See docs/data.md.
"""


def _add_data_commands(commands) -> None:
    from .data import DEFAULT_SHARD_SIZE, FORMATS, OUTPUT_FORMATS
    from .data.precompute import FLOW_DTYPES

    data = commands.add_parser(
        "data", help="training data: build streamable shards from annotation files; precompute flow and pseudo spans"
    )
    data_commands = data.add_subparsers(dest="data_command", required=True)
    build = data_commands.add_parser(
        "build",
        help="write Parquet or WebDataset shards (media bytes inside) and manifest.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_DATA_BUILD_DESCRIPTION,
    )
    build.add_argument(
        "--source",
        action="append",
        metavar="[NAME:]FORMAT=PATH",
        help=f"an annotation file and its format ({', '.join(FORMATS)}); repeatable. NAME prefixes the record ids "
        "(default: the file name without extension)",
    )
    build.add_argument("--format", choices=FORMATS, help="format of --annotations (instead of --source)")
    build.add_argument("--annotations", metavar="PATH", help="one annotation file (with --format)")
    build.add_argument(
        "--media-root",
        action="append",
        metavar="DIR",
        help="folder the media paths are relative to: once for all sources or once per source, in order (not "
        "needed for text sources); paths that escape it are skipped",
    )
    build.add_argument("--output", required=True, metavar="DIR", help="shard folder (created; resumed if it exists)")
    build.add_argument(
        "--format-out", choices=list(OUTPUT_FORMATS), default="parquet", help="shard format (default: %(default)s)"
    )
    build.add_argument(
        "--shard-size",
        default=DEFAULT_SHARD_SIZE,
        help="target bytes per shard: 256MB, 1GB, 64MiB or a number (default: %(default)s)",
    )
    build.add_argument(
        "--world-size",
        type=int,
        default=1,
        help="the shard count is a multiple of this, so that each training rank reads as many shards (default: 1)",
    )
    build.add_argument(
        "--seed", type=int, default=None, help="shuffle the records with this seed (default: keep their order)"
    )
    build.add_argument(
        "--num-workers", type=int, default=1, help="processes checking media and writing shards (default: 1)"
    )
    build.add_argument(
        "--overwrite", action="store_true", help="replace a previous build in --output (even one of other inputs)"
    )
    build.add_argument("--no-progress", action="store_true", help="no progress bars")
    build.set_defaults(run=_data_build_command)

    flow = data_commands.add_parser(
        "flow",
        help="precompute candidate-frame indices, flow-frame indices and optical flow as side shards",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_SIDE_DESCRIPTION.format(
            what="Compute every video's optical flow once, with the processor's settings, for training.",
            columns="candidate_indices, flow_indices, flow (bytes), flow_scale",
            command="flow",
        ),
    )
    _add_side_arguments(flow)
    flow.add_argument(
        "--flow-dtype",
        choices=FLOW_DTYPES,
        default="float16",
        help="how flow is stored: float16 (2 bytes a value: 12.8 MB for 64 steps x 2 x 224 x 224), or uint8 with a "
        "per-video scale (1 byte a value, error at most half the scale) (default: %(default)s)",
    )
    flow.set_defaults(run=_data_flow_command)

    spans = data_commands.add_parser(
        "pseudo-spans",
        help="precompute pseudo spans (span_targets) with a model as side shards",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_SIDE_DESCRIPTION.format(
            what="Make every video's pseudo span with the --model checkpoint: each candidate frame answers the "
            "question alone\n(greedy), each answer is scored by the unigram recall of the gold answer, and the "
            "largest rectangle\nunder the scores is the span, stored as span_targets, two ratios in [0, 1].",
            columns="span_targets",
            command="pseudo-spans",
        ),
    )
    _add_side_arguments(spans)
    spans.add_argument(
        "--max-new-tokens", type=int, default=128, help="most tokens of each per-frame answer (default: %(default)s)"
    )
    spans.add_argument(
        "--batch-size", type=int, default=32, help="frames answered per generate call (default: %(default)s)"
    )
    spans.add_argument(
        "--subtract-min", action="store_true", help="subtract the lowest frame score before the largest rectangle"
    )
    spans.add_argument("--dtype", default="auto", choices=DTYPES, help="model weights (default: as saved)")
    spans.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available, LOCAL_RANK's GPU)"
    )
    spans.set_defaults(run=_data_pseudo_spans_command)


def _add_side_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", required=True, metavar="DIR", help="complete shard folder of videotgb data build")
    parser.add_argument(
        "--model", required=True, help="VideoTGB checkpoint folder or Hub id whose processor sets frames and flow"
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="side folder (created; resumed if it exists)")
    parser.add_argument("--revision", default=None, help="Hub revision of --model")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace side shards made with other settings or from another build"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _synthetic_generate_command(arguments: argparse.Namespace) -> int:
    from .synthetic import SPLITS, SyntheticConfig, generate

    if arguments.seconds is not None and arguments.frames is not None:
        raise ValueError("give either --frames or --seconds, not both")
    if arguments.seconds is not None:
        if not arguments.seconds > 0:
            raise ValueError(f"--seconds {arguments.seconds}: must be positive")
        frames = round(arguments.seconds * arguments.fps)
    else:
        frames = 256 if arguments.frames is None else arguments.frames
    counts = {
        split: arguments.num_videos
        if getattr(arguments, f"{split}_videos") is None
        else getattr(arguments, f"{split}_videos")
        for split in SPLITS
    }
    config = SyntheticConfig(
        seed=arguments.seed,
        num_videos=counts,
        num_frames=frames,
        fps=arguments.fps,
        size=arguments.size,
        shape_size=arguments.shape_size,
        events_per_video=arguments.events_per_video,
        event_frames=arguments.event_frames,
        gap_frames=arguments.gap_frames,
        question_types=tuple(kind.strip() for kind in arguments.question_types.split(",")),
        noise=arguments.noise,
        keyframe_interval=arguments.keyframe_interval,
    )
    index = generate(
        config,
        arguments.out,
        shards=arguments.shards,
        shard_size=arguments.shard_size,
        format_out=arguments.format_out,
        overwrite=arguments.overwrite,
        progress=not arguments.no_progress,
    )
    written = ", ".join(f"{info['videos']} {split}" for split, info in index["splits"].items())
    size = sum(info["bytes"] for info in index["splits"].values())
    print(
        f"wrote {written} videos ({config.num_frames} frames at {config.fps} fps, {config.size}x{config.size}), "
        f"{size} bytes, and index.json to {arguments.out}"
    )
    if arguments.shards:
        print("shards: " + ", ".join(info["shards"] for info in index["splits"].values()))
    return 0


_SYNTHETIC_GENERATE_DESCRIPTION = """\
Generate the synthetic long-video grounding benchmark: H.264 videos of a static textured
background in which a few short events happen at random times (a shape of one colour appears,
moves up, down, left or right, and disappears), one question per video about one event, its
gold answer and the event's true span in frames and seconds.

question types (--question-types):
  colour     What colour is the shape that moves up?   -> red
  direction  Which way does the red shape move?        -> up
  shape      What shape moves left?                    -> circle

splits: train, validation, test (independent seeds) and held_out, whose asked events have
colour-direction pairs that no event of the other splits has. The same --seed and settings give
byte-identical videos and the same index.json.

written to --out: videos/<split>/<number>.mp4, index.json (every sample, its events and spans);
with --shards also annotations/<split>.json and shards/<split>/ (videotgb data build's format;
a record's id is its sample id in index.json).

example:
  videotgb synthetic generate --out synthetic --seed 0 --num-videos 200 --seconds 60 --fps 4 --shards

See docs/synthetic.md.
"""


def _add_synthetic_commands(commands) -> None:
    from .data import DEFAULT_SHARD_SIZE, OUTPUT_FORMATS
    from .synthetic import QUESTION_TYPES, SyntheticConfig
    from .synthetic.evaluate import add_eval_parser

    defaults = SyntheticConfig()
    synthetic = commands.add_parser("synthetic", help="the synthetic long-video grounding benchmark")
    synthetic_commands = synthetic.add_subparsers(dest="synthetic_command", required=True)
    generate = synthetic_commands.add_parser(
        "generate",
        help="write videos, questions, true spans (index.json) and optionally training shards",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_SYNTHETIC_GENERATE_DESCRIPTION,
    )
    generate.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (new or empty unless --overwrite)"
    )
    generate.add_argument("--seed", type=int, default=defaults.seed, help="base seed (default: %(default)s)")
    generate.add_argument(
        "--num-videos", type=int, default=100, help="videos in each split (default: %(default)s); 0 skips a split"
    )
    for split in ("train", "validation", "test", "held-out"):
        generate.add_argument(
            f"--{split}-videos", type=int, default=None, help=f"videos in the {split} split (default: --num-videos)"
        )
    generate.add_argument(
        "--frames", type=int, default=None, help=f"frames per video (default: {defaults.num_frames})"
    )
    generate.add_argument("--seconds", type=float, default=None, help="seconds per video, instead of --frames")
    generate.add_argument("--fps", type=int, default=defaults.fps, help="frames per second (default: %(default)s)")
    generate.add_argument(
        "--size", type=int, default=defaults.size, help="side of the square frames, even (default: %(default)s)"
    )
    generate.add_argument("--shape-size", type=int, default=None, help="side of a shape (default: --size / 4)")
    generate.add_argument(
        "--events-per-video",
        type=int,
        default=defaults.events_per_video,
        help="events per video, each of another colour; 0: videos without events, whose question asks about a "
        "motion that does not happen (answer 'none') (default: %(default)s)",
    )
    generate.add_argument(
        "--event-frames",
        type=int,
        default=defaults.event_frames,
        help="frames a shape is on screen, moving (default: %(default)s)",
    )
    generate.add_argument(
        "--gap-frames",
        type=int,
        default=defaults.gap_frames,
        help="at least this many frames between two events (default: %(default)s)",
    )
    generate.add_argument(
        "--question-types",
        default=",".join(QUESTION_TYPES),
        help="comma-separated question types to draw from (default: %(default)s)",
    )
    generate.add_argument(
        "--noise", type=float, default=defaults.noise, help="std of the per-frame pixel noise (default: %(default)s)"
    )
    generate.add_argument(
        "--keyframe-interval",
        type=int,
        default=None,
        metavar="FRAMES",
        help="frames between the videos' keyframes (default: 4 seconds' worth)",
    )
    generate.add_argument("--shards", action="store_true", help="also build training shards of each split")
    generate.add_argument(
        "--shard-size", default=DEFAULT_SHARD_SIZE, help="target bytes per shard (default: %(default)s)"
    )
    generate.add_argument(
        "--format-out", choices=list(OUTPUT_FORMATS), default="parquet", help="shard format (default: %(default)s)"
    )
    generate.add_argument(
        "--overwrite", action="store_true", help="replace index.json, videos/, annotations/ and shards/ in --out"
    )
    generate.add_argument("--no-progress", action="store_true", help="no progress bars")
    generate.set_defaults(run=_synthetic_generate_command)
    _add_synthetic_train_command(synthetic_commands)
    add_eval_parser(synthetic_commands)


def _add_eval_commands(commands) -> None:
    from .evaluation.run import add_run_parser
    from .evaluation.score import add_score_parser

    evaluation = commands.add_parser("eval", help="evaluate a model on video QA benchmarks")
    eval_commands = evaluation.add_subparsers(dest="eval_command", required=True)
    add_run_parser(eval_commands)
    add_score_parser(eval_commands)


DTYPES = ["auto", "float32", "bfloat16", "float16"]


def build_parser() -> argparse.ArgumentParser:
    from .app import add_app_parsers
    from .convert_original import add_convert_parser
    from .hub_upload import add_hub_parsers
    from .optical_flow import ESTIMATORS, FlowConfig

    parser = argparse.ArgumentParser(
        prog="videotgb", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    answer = commands.add_parser("answer", help="answer a question about a video")
    answer.add_argument("--model", required=True, help="VideoTGB checkpoint folder or Hub id")
    answer.add_argument("--video", required=True, help="video file")
    answer.add_argument("--question", required=True)
    answer.add_argument("--max-new-tokens", type=int, default=64)
    answer.add_argument("--num-beams", type=int, default=1)
    answer.add_argument("--dtype", default="auto", choices=DTYPES, help="weights and inputs (default: as saved)")
    answer.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    answer.add_argument("--revision", default=None, help="Hub revision")
    answer.add_argument(
        "--frame-alignment",
        choices=["exact", "keyframe"],
        default=None,
        help="read frames at their exact places or moved to keyframes (faster on long videos); default: the "
        "processor's saved setting",
    )
    answer.set_defaults(run=_answer_command)

    init = commands.add_parser(
        "init",
        help="build a VideoTGB (model + processor) from BLIP-2 / InstructBLIP and BERT",
        description="Write a VideoTGB checkpoint folder from a BLIP-2 / InstructBLIP checkpoint (vision tower, "
        "Q-Former, projection, language model, their tokenizers and image processor) and a BERT checkpoint (the "
        "bridge's question embeddings and layers, and its tokenizer). The bridge's cross-attention, flow embedding "
        "and span head are new: train before relying on its keyframes.",
    )
    init.add_argument("--vlm", required=True, help="BLIP-2 / InstructBLIP folder or Hub id")
    init.add_argument("--bert", required=True, help="BERT folder or Hub id (e.g. bert-base-uncased)")
    init.add_argument("--output", required=True, help="folder to write (must be empty unless --overwrite)")
    init.add_argument("--overwrite", action="store_true", help="write into a folder that already holds files")
    init.add_argument(
        "--flow-estimator",
        default=FlowConfig.estimator,
        choices=ESTIMATORS,
        help="optical flow the bridge will read (default: %(default)s, ~1 ms per frame pair on a CPU; the released "
        "VideoTGB-7B read raft_large, which needs RAFT weights)",
    )
    init.add_argument("--flow-size", type=int, default=None, help="side of the flow fields (default: 224)")
    init.add_argument("--num-candidate-frames", type=int, default=None, help="default: 32")
    init.add_argument("--num-keyframes", type=int, default=None, help="default: 4")
    init.add_argument("--frame-aggregation", choices=["concat", "mean"], default=None, help="default: mean")
    init.add_argument("--dtype", default="auto", choices=DTYPES, help="dtype of the saved weights")
    init.add_argument("--revision", default=None, help="Hub revision of both sources")
    init.set_defaults(run=_init_command)

    demo = commands.add_parser(
        "demo",
        help="the tiny trained model shipped with the package answers a question about a synthetic video",
        description="Answer a question about a video and show which moments the model looked at. With no "
        "arguments: the tiny VideoTGB shipped with the package (trained by `videotgb synthetic train`) on a "
        "synthetic video it generates, with the gold answer and the true time of the event. Prints the question, "
        "the answer and the keyframe times; writes the video (when generated) and a picture (the keyframes and "
        "the bridge's span probability over the whole video) into --output.",
    )
    demo.add_argument("--model", default=None, help="checkpoint folder or Hub id (default: the shipped tiny model)")
    demo.add_argument("--video", default=None, help="video file (default: a synthetic video, generated)")
    demo.add_argument("--question", default=None, help="question (default: the synthetic video's question)")
    demo.add_argument("--keyframes", type=int, default=None, help="K, frames the model reads (default: the model's)")
    demo.add_argument("--output", default="outputs/demo", help="folder for the picture and the generated video")
    demo.add_argument("--dtype", default="auto", choices=DTYPES, help="weights and inputs (default: as saved)")
    demo.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    demo.add_argument("--revision", default=None, help="Hub revision of --model")
    demo.set_defaults(run=_demo_command)

    _add_data_commands(commands)
    _add_synthetic_commands(commands)
    _add_eval_commands(commands)
    add_convert_parser(commands)
    add_hub_parsers(commands)
    add_app_parsers(commands)
    return parser


_SYNTHETIC_TRAIN_DESCRIPTION = """\
Make the tiny trained VideoTGB of the synthetic benchmark (the model `videotgb demo` ships) from
nothing but a seed, by running the package's own commands in order, each printed before it runs:

  1. videotgb synthetic generate   (four times) clips that are one event, clips holding an event
                                   and frames without it, clips without any event (answer "none"),
                                   and long videos of several events
  2. (in-process)                  the untrained tiny model: width 64, word-level tokenizers
  3. videotgb-train --stage instruct --also_train vision_model language_model
                                   the answerer learns to answer from frames of the event (clips)
  4. videotgb data flow            optical flow of the long videos, once
  5. videotgb data pseudo-spans    each candidate frame answers alone; the largest rectangle under
                                   the per-frame scores against the gold answer is the pseudo span
  6. videotgb-train --stage grounding
                                   the bridge learns the pseudo spans from flow and the question

No true span is used in training. The final checkpoint is <out>/model, with recipe.json (settings,
commands, times, final training metrics); the data, side shards and runs stay under <out>.

example (the shipped model; 13 minutes on 2 CPU cores):
  videotgb synthetic train --out runs/synthetic --seed 0

See docs/synthetic.md.
"""


def _add_synthetic_train_command(synthetic_commands) -> None:
    from .synthetic.recipe import SETTING_HELP, RecipeSettings

    defaults = RecipeSettings()
    train = synthetic_commands.add_parser(
        "train",
        help="make the tiny trained VideoTGB with the package's own training commands",
        description=_SYNTHETIC_TRAIN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--out", required=True, metavar="DIR", help="folder for data, runs and the model")
    train.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    for field in dataclasses.fields(RecipeSettings):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        explained = f"{SETTING_HELP[field.name]} (default: %(default)s)"
        if field.name == "question_types":
            train.add_argument(flag, default=",".join(default), help=explained)
        else:
            train.add_argument(flag, type=type(default), default=default, help=explained)
    train.set_defaults(run=_synthetic_train_command)


def _synthetic_train_command(arguments: argparse.Namespace) -> int:
    from .synthetic.recipe import RecipeSettings, run_recipe

    values = {field.name: getattr(arguments, field.name) for field in dataclasses.fields(RecipeSettings)}
    values["question_types"] = tuple(kind.strip() for kind in values["question_types"].split(","))
    run_recipe(RecipeSettings(**values), arguments.out, overwrite=arguments.overwrite)
    return 0


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe a problem with the inputs or the machine, printed without a traceback."""
    from .data import DataDependencyError
    from .optical_flow import FlowDependencyError

    return (OSError, ValueError, FlowDependencyError, DataDependencyError)


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    try:
        return arguments.run(arguments)
    except expected_errors() as error:
        if os.environ.get("VIDEOTGB_TRACEBACK"):
            raise
        subcommand = (
            getattr(arguments, "data_command", None)
            or getattr(arguments, "synthetic_command", None)
            or getattr(arguments, "eval_command", None)
        )
        command = " ".join(filter(None, [arguments.command, subcommand]))
        print(f"videotgb {command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
