"""Command line of videotgb.

videotgb answer --model PATH_OR_HUB_ID --video FILE --question "What happens after the goal?"
videotgb init --vlm BLIP2_OR_INSTRUCTBLIP --bert BERT --output DIR
videotgb demo [--output DIR]

Errors that come from the inputs (a missing file, a folder that is not a VideoTGB checkpoint, an undecodable video,
a device this machine lacks) are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
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


def load_processor(model_name_or_path: str, revision: str | None = None):
    """The checkpoint's `VideoTGBProcessor`, after checking that it is a VideoTGB checkpoint."""
    from .processing_videotgb import VideoTGBProcessor

    check_checkpoint(model_name_or_path, revision)
    return VideoTGBProcessor.from_pretrained(model_name_or_path, revision=revision)


def load_model(
    model_name_or_path: str, dtype: str = "auto", device: str | torch.device | None = None, revision: str | None = None
):
    """The checkpoint's model (safetensors only) on `device`, in eval mode, after checking the folder and device."""
    from .modeling_videotgb import VideoTGBForConditionalGeneration

    target = device if isinstance(device, torch.device) else resolve_device(device)
    check_checkpoint(model_name_or_path, revision)
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model = VideoTGBForConditionalGeneration.from_pretrained(
        model_name_or_path, dtype=torch_dtype, revision=revision, use_safetensors=True
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
    processor = load_processor(arguments.model, arguments.revision)
    clip = processor.load_video(video)
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
    from .demo import build_demo

    checkpoint, video = build_demo(Path(arguments.output))
    print(f"demo checkpoint: {checkpoint}\ndemo video: {video}")
    model, processor = load(str(checkpoint))
    question = "Where does the square move?"
    print(f"question: {question}")
    print(_format_answer(answer_question(model, processor, str(video), question, max_new_tokens=8, do_sample=False)))
    print(
        "(the demo model has random weights: the keyframes come from the real pipeline, the words do not mean anything)"
    )
    return 0


DTYPES = ["auto", "float32", "bfloat16", "float16"]


def build_parser() -> argparse.ArgumentParser:
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

    demo = commands.add_parser("demo", help="build a tiny checkpoint and a synthetic video offline, then answer")
    demo.add_argument("--output", default="outputs/demo", help="folder for the demo checkpoint and video")
    demo.set_defaults(run=_demo_command)
    return parser


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe a problem with the inputs or the machine, printed without a traceback."""
    from .optical_flow import FlowDependencyError

    return (OSError, ValueError, FlowDependencyError)


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    try:
        return arguments.run(arguments)
    except expected_errors() as error:
        if os.environ.get("VIDEOTGB_TRACEBACK"):
            raise
        print(f"videotgb {arguments.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
