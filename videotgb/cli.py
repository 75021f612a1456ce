"""Command line: `videotgb answer` asks a checkpoint about a video; `videotgb demo` runs the embedded default.

videotgb answer --model PATH_OR_HUB_ID --video FILE --question "What happens after the goal?"
videotgb demo [--output DIR]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.utils import logging

logger = logging.get_logger(__name__)


@dataclass
class Answer:
    """What `answer_question` returns: the text and the keyframes it was read from."""

    text: str
    keyframe_indices: list[int]
    keyframe_timestamps: list[float]


def load(model_name_or_path: str, dtype: str = "auto", device: str | None = None, revision: str | None = None):
    """Model and processor from a local folder or a Hub id (safetensors only), in eval mode."""
    from .modeling_videotgb import VideoTGBForConditionalGeneration
    from .processing_videotgb import VideoTGBProcessor

    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model = VideoTGBForConditionalGeneration.from_pretrained(
        model_name_or_path, dtype=torch_dtype, revision=revision, use_safetensors=True
    ).eval()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    processor = VideoTGBProcessor.from_pretrained(model_name_or_path, revision=revision)
    processor.check_model_config(model.config)
    return model, processor


def answer_question(model, processor, video, question: str, **generate_kwargs) -> Answer:
    """Answer one question about one video (path, bytes or file object) with greedy decoding by default."""
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
    model, processor = load(arguments.model, arguments.dtype, arguments.device, arguments.revision)
    generate_kwargs = {"max_new_tokens": arguments.max_new_tokens, "do_sample": False}
    if arguments.num_beams > 1:
        generate_kwargs["num_beams"] = arguments.num_beams
    result = answer_question(model, processor, arguments.video, arguments.question, **generate_kwargs)
    print(_format_answer(result))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videotgb", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    answer = commands.add_parser("answer", help="answer a question about a video")
    answer.add_argument("--model", required=True, help="checkpoint folder or Hub id")
    answer.add_argument("--video", required=True, help="video file")
    answer.add_argument("--question", required=True)
    answer.add_argument("--max-new-tokens", type=int, default=64)
    answer.add_argument("--num-beams", type=int, default=1)
    answer.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    answer.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    answer.add_argument("--revision", default=None, help="Hub revision")
    answer.set_defaults(run=_answer_command)

    demo = commands.add_parser("demo", help="build a tiny checkpoint and a synthetic video offline, then answer")
    demo.add_argument("--output", default="outputs/demo", help="folder for the demo checkpoint and video")
    demo.set_defaults(run=_demo_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    try:
        return arguments.run(arguments)
    except (OSError, ValueError) as error:
        print(f"videotgb {arguments.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
