"""`videotgb eval run`: answer a benchmark with a VideoTGB and append the predictions to a JSONL file
(docs/evaluation.md).

Every item becomes one line of the predictions file, written and flushed as soon as its batch is answered, with the
keyframes the model read (frame indices and seconds) and the bridge's most likely span. A run that stops (Ctrl-C, a
crash, a lost machine) resumes when started again with the same predictions file: items whose line is there are
skipped, lines already written are never rewritten, and a last line cut short by the crash (no newline, not JSON) is
removed and its item answered again. Items whose video is missing or does not decode are written as failed lines
(``prediction: null`` and ``error``), counted and reported at the end; they do not stop the run.

Not remote code: the model, processor and video files never import this module.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from ..keyframes import draw_spans
from ..pseudo_spans import words
from .benchmarks import (
    LETTERS,
    BenchmarkItem,
    default_benchmark_name,
    load_multiple_choice,
    load_synthetic,
    load_videochatgpt,
)

logger = logging.get_logger(__name__)

GENERATION_PRESETS: dict[str, dict[str, Any]] = {
    "greedy": {"do_sample": False, "num_beams": 1, "max_new_tokens": 64},
    "original": {"do_sample": True, "temperature": 0.2, "top_p": 1.0, "num_beams": 1, "max_new_tokens": 128},
}
"""``greedy`` (the default) is deterministic. ``original`` is what the original VideoTGB's zero-shot QA inference
(eval/inference.py of bigai-nlco/VideoTGB, run by its eval/scripts/run_qa_*.sh) passed to generate: sampling at
temperature 0.2, up to 128 new tokens, no beam search, top-p left at its default of 1.0."""

MULTIPLE_CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices directly."


class PredictionsFileError(ValueError):
    """A predictions file that cannot be resumed (a bad line, or lines of another model, benchmark or setting)."""


@dataclass
class RunSummary:
    """What :func:`run_benchmark` did: items in the benchmark (after ``limit``), already in the file, answered now,
    and failed now (missing or undecodable videos), with the failed lines' errors."""

    items: int
    skipped: int
    answered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    dropped_partial_line: bool = False


def multiple_choice_prompt(question: str, options: Sequence[str]) -> str:
    """The question followed by its options as lettered lines and the instruction to answer with a letter.

    Example:
        >>> print(multiple_choice_prompt("What does the man do?", ["cook", "run"]))
        What does the man do?
        A. cook
        B. run
        Answer with the option's letter from the given choices directly.
    """
    lines = [question.strip(), *(f"{LETTERS[number]}. {option}" for number, option in enumerate(options))]
    return "\n".join([*lines, MULTIPLE_CHOICE_INSTRUCTION])


def parse_letter(prediction: str, options: Sequence[str]) -> str | None:
    """The option a generated answer picks, as a letter, or None when it picks none or several.

    In order: an answer that is a letter (``"B"``, ``"(b)"``, ``"B."``) or starts with one marked as such
    (``"(b) run"``, ``"B. run"``); an answer whose words are one option's words; a letter named as the answer
    (``"the answer is B"``, ``"option B"``). Letters beyond the options do not count.

    Examples:
        >>> parse_letter("(b) run", ["cook", "run"]), parse_letter("Run.", ["cook", "run"])
        ('B', 'B')
        >>> parse_letter("I think the answer is (A)", ["cook", "run"])
        'A'
        >>> parse_letter("A man runs", ["cook", "run"]) is None, parse_letter("E", ["cook", "run"]) is None
        (True, True)
    """
    valid = LETTERS[: len(options)]
    text = prediction.strip()
    marked = re.fullmatch(r"\(?([A-Za-z])\)?[.:]?", text) or re.match(r"\(([A-Za-z])\)|([A-Z])[.:)]\s", text)
    if marked:
        letter = next(group for group in marked.groups() if group).upper()
        if letter in valid:
            return letter
    answer_words = words(text)
    matching = [LETTERS[number] for number, option in enumerate(options) if words(option) == answer_words]
    if len(matching) == 1:
        return matching[0]
    named = re.search(r"\b(?i:answer|option|choice)\b\W*(?:(?i:is)\W*)?\(?([A-Z])\b", text)
    return named.group(1) if named and named.group(1) in valid else None


def generation_settings(preset: str, max_new_tokens: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """The generate arguments of a preset of :data:`GENERATION_PRESETS`, with `max_new_tokens` overriding; the seed
    of a sampling run is recorded with them."""
    if preset not in GENERATION_PRESETS:
        raise ValueError(f"--generation {preset!r}: expected one of {', '.join(GENERATION_PRESETS)}")
    settings = dict(GENERATION_PRESETS[preset])
    if max_new_tokens is not None:
        if max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens {max_new_tokens}: must be a positive integer")
        settings["max_new_tokens"] = max_new_tokens
    if settings["do_sample"]:
        settings["seed"] = seed
    return settings


# ---- the predictions file --------------------------------------------------------------------------------------


def read_predictions(path: str | os.PathLike, repair: bool = False) -> tuple[list[dict[str, Any]], bool]:
    """The lines of a predictions file, and whether a cut-short last line was found.

    A last line without its newline that is not JSON is what a crash in the middle of a write leaves: with `repair`
    the file is cut back to the end of the line before it (the only change ever made to lines already written; its
    item is answered again), without it the line is ignored. Any other line that is not a JSON object is a
    PredictionsFileError naming the file and the line number.
    """
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: b"" for a complete file
    partial = False
    if tail.strip():
        try:
            json.loads(tail)
            lines.append(tail)  # a complete object whose newline was not written yet
        except ValueError:
            partial = True
            if repair:
                with open(path, "r+b") as file:
                    file.truncate(len(data) - len(tail))
                logger.warning(
                    f"{path}: the last line was cut short ({len(tail)} bytes without a newline, not JSON: "
                    f"{tail[:60]!r}...), as a run that stopped in the middle of a write leaves it; removed it, and "
                    "its item is answered again"
                )
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise PredictionsFileError(f"{path}, line {number}: not JSON ({error})") from None
        if not isinstance(record, dict) or "id" not in record:
            raise PredictionsFileError(f"{path}, line {number}: not a prediction (a JSON object with an 'id')")
        records.append(record)
    return records, partial


def _check_resumable(
    records: list[dict[str, Any]], path: Path, expected: dict[str, Any], item_ids: set[str]
) -> set[str]:
    """The ids already answered; PredictionsFileError when a line belongs to another run."""
    done: set[str] = set()
    for number, record in enumerate(records, start=1):
        for key, value in expected.items():
            if record.get(key) != value:
                raise PredictionsFileError(
                    f"--predictions {path}: line {number} has {key} {record.get(key)!r}, but this run has {value!r}; "
                    "resume with the same settings, or write to another file (or pass --overwrite to start over)"
                )
        if record["id"] not in item_ids:
            raise PredictionsFileError(
                f"--predictions {path}: line {number} answers item {record['id']!r}, which the benchmark does not "
                "have; write to another file (or pass --overwrite to start over)"
            )
        if record["id"] in done:
            raise PredictionsFileError(f"--predictions {path}: item {record['id']!r} appears twice (line {number})")
        done.add(record["id"])
    return done


# ---- answering -------------------------------------------------------------------------------------------------


def _prompt(item: BenchmarkItem) -> str:
    return item.question if item.options is None else multiple_choice_prompt(item.question, item.options)


def _span_seconds(clip, start_step: int, end_step: int) -> list[float] | None:
    """The bridge's flow-step span as seconds: from the first frame of `start_step` to the end of the first frame of
    `end_step` (frame / fps, as the synthetic benchmark's true spans); empty at its start when reversed."""
    if clip.metadata is None or not clip.metadata.fps:
        return None
    fps = float(clip.metadata.fps)
    first = clip.flow_indices[start_step]
    last = clip.flow_indices[end_step] + 1 if end_step >= start_step else first
    return [first / fps, last / fps]


@torch.no_grad()
def answer_batch(
    model, processor, items: Sequence[BenchmarkItem], generate_kwargs: dict[str, Any]
) -> list[dict[str, Any]]:
    """Answer items whose videos exist: per item its prediction fields (``prediction``, ``predicted_letter``,
    keyframes, the bridge's span) or, for a video that does not decode, ``error``."""
    from ..video_io import VideoDecodeError

    results: list[dict[str, Any]] = [{} for _ in items]
    clips, rows = [], []
    for row, item in enumerate(items):
        try:
            clips.append(processor.load_video(item.video, str(item.video)))
            rows.append(row)
        except (VideoDecodeError, OSError) as error:
            results[row] = {"error": f"undecodable video: {item.video}: {error}"}
    if not clips:
        return results
    chosen = [items[row] for row in rows]
    batch = processor([_prompt(item) for item in chosen], videos=clips).to(model.device)
    inputs = {key: value.to(model.dtype) if value.is_floating_point() else value for key, value in batch.items()}
    output = model.generate(**inputs, return_dict_in_generate=True, **generate_kwargs)
    texts = processor.batch_decode(output.sequences, skip_special_tokens=True)
    bridge = model.run_bridge(
        inputs["flow"], inputs["flow_mask"], inputs["bridge_input_ids"], inputs["bridge_attention_mask"], len(clips)
    )
    spans = draw_spans(bridge.start_logits, bridge.end_logits, bridge.flow_lengths, num_spans=1)[:, 0].tolist()
    for row, item, clip, text, keyframes, (start, end) in zip(
        rows, chosen, clips, texts, output.keyframe_indices.tolist(), spans, strict=True
    ):
        prediction = text.strip()
        results[row] = {
            "prediction": prediction,
            "predicted_letter": None if item.options is None else parse_letter(prediction, item.options),
            "keyframe_indices": [int(clip.candidate_indices[index]) for index in keyframes],
            "keyframe_seconds": [float(clip.candidate_timestamps[index]) for index in keyframes],
            "predicted_span_seconds": _span_seconds(clip, start, end),
        }
    return results


def prediction_line(
    item: BenchmarkItem, benchmark: str, format_: str, model: str, generation: dict[str, Any], result: dict[str, Any]
) -> dict[str, Any]:
    """One line of the predictions file (docs/evaluation.md#predictions)."""
    return {
        "benchmark": benchmark,
        "format": format_,
        "id": item.id,
        "video": None if item.video is None else str(item.video),
        "question": item.question,
        "answer": item.answer,
        "options": None if item.options is None else list(item.options),
        "prediction": result.get("prediction"),
        "predicted_letter": result.get("predicted_letter"),
        "keyframe_indices": result.get("keyframe_indices", []),
        "keyframe_seconds": result.get("keyframe_seconds", []),
        "gold_span_seconds": None if item.gold_span_seconds is None else list(item.gold_span_seconds),
        "predicted_span_seconds": result.get("predicted_span_seconds"),
        "error": result.get("error"),
        "model": model,
        "generation": generation,
    }


def run_benchmark(
    model_path: str,
    items: Sequence[BenchmarkItem],
    predictions_path: str | os.PathLike,
    benchmark: str,
    format_: str,
    generation: str = "greedy",
    max_new_tokens: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
    limit: int | None = None,
    overwrite: bool = False,
    device: str | None = None,
    dtype: str = "auto",
    revision: str | None = None,
    progress: bool = True,
    on_line: Callable[[dict[str, Any]], None] | None = None,
) -> RunSummary:
    """Answer `items` (the first `limit`) with the model at `model_path`, appending one line per item to
    `predictions_path` and skipping the items it already holds.

    Args:
        model_path: VideoTGB checkpoint folder or Hub id, with its processor.
        items: the benchmark (:mod:`videotgb.evaluation.benchmarks`).
        predictions_path: JSONL file; created, or resumed when it exists (replaced with `overwrite`).
        benchmark, format_: the benchmark's name and format, written on every line (a resumed file must match).
        generation: a preset of :data:`GENERATION_PRESETS`; `max_new_tokens` overrides its length.
        seed: torch seed of a sampling run.
        batch_size: items decoded and answered together.
        on_line: called with every line after it is written (progress hooks, tests).

    Returns:
        A :class:`RunSummary`; failed items are also logged as a warning at the end.
    """
    from ..cli import load_model, load_processor, resolve_device

    for flag, value in (("--batch-size", batch_size), ("--limit", limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{flag} {value!r}: must be a positive integer")
    settings = generation_settings(generation, max_new_tokens, seed)
    every_id = {item.id for item in items}
    items = list(items)[:limit]
    path = Path(predictions_path)
    expected = {"model": str(model_path), "benchmark": benchmark, "format": format_, "generation": settings}
    done: set[str] = set()
    partial = False
    if path.exists() and not overwrite:
        records, partial = read_predictions(path)
        done = _check_resumable(records, path, expected, every_id)
    pending = [item for item in items if item.id not in done]
    summary = RunSummary(items=len(items), skipped=len(items) - len(pending), dropped_partial_line=partial)
    if done:
        logger.warning(
            f"{path}: resuming; {summary.skipped} of {len(items)} items are answered already and are skipped"
        )

    target = resolve_device(device)
    processor = load_processor(str(model_path), revision) if pending else None
    model = load_model(str(model_path), dtype, target, revision) if pending else None
    if pending:
        processor.check_model_config(model.config)
    generate_kwargs = {key: value for key, value in settings.items() if key != "seed"}
    if settings["do_sample"]:
        torch.manual_seed(seed)

    if partial:
        read_predictions(path, repair=True)
    elif done and not path.read_bytes().endswith(b"\n"):  # a complete last line whose newline was not written
        with open(path, "ab") as file:
            file.write(b"\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(path, "w" if overwrite else "a", encoding="utf-8") as file,
        tqdm(total=len(pending), desc=f"eval {benchmark}", unit="item", disable=not progress) as bar,
    ):

        def write(item: BenchmarkItem, result: dict[str, Any]) -> None:
            line = prediction_line(item, benchmark, format_, str(model_path), settings, result)
            file.write(json.dumps(line) + "\n")
            file.flush()
            if line["error"] is None:
                summary.answered += 1
            else:
                summary.failed += 1
                summary.errors.append(f"{item.id}: {line['error']}")
            bar.update(1)
            if on_line is not None:
                on_line(line)

        for first in range(0, len(pending), batch_size):
            batch = pending[first : first + batch_size]
            for item in batch:
                if item.video is None:
                    write(item, {"error": item.problem})
            answerable = [item for item in batch if item.video is not None]
            if answerable:
                for item, result in zip(
                    answerable, answer_batch(model, processor, answerable, generate_kwargs), strict=True
                ):
                    write(item, result)
    if summary.failed:
        shown = "\n  ".join(summary.errors[:10])
        more = f"\n  ... and {summary.failed - 10} more" if summary.failed > 10 else ""
        logger.warning(
            f"{summary.failed} of {len(pending)} items failed (missing or undecodable videos); they are written as "
            f"lines with prediction null and an error:\n  {shown}{more}"
        )
    return summary


# ---- command line ----------------------------------------------------------------------------------------------

_DESCRIPTION = """\
Answer a benchmark with a VideoTGB checkpoint and append one JSON line per item to --predictions
as it is answered (the answer, the keyframes read and their times, the bridge's most likely span).

benchmarks (give one):
  --questions Q.json --answers A.json --video-dir DIR
      Video-ChatGPT zero-shot QA (MSVD-QA, MSRVTT-QA, ActivityNet-QA), paired by question_id
  --multiple-choice FILE.json|FILE.jsonl --video-dir DIR
      NExT-QA / EgoSchema / Video-MME style: question, options, answer letter or index
  --synthetic DIR [--split test]
      a folder written by `videotgb synthetic generate`

resuming: run the same command again. Items already in --predictions are skipped; lines already
written are kept as they are (a last line cut short by a crash is removed and its item redone).
Missing or undecodable videos are written as lines with prediction null and an error, counted,
and reported at the end; they do not stop the run.

examples:
  videotgb synthetic generate --out synthetic --num-videos 20 --frames 128
  videotgb eval run --synthetic synthetic --predictions preds/synthetic.jsonl --limit 8
  videotgb eval run --model ORG/VideoTGB --questions MSVD/test_q.json --answers MSVD/test_a.json \\
      --video-dir MSVD/videos --predictions preds/msvd.jsonl --batch-size 8

See docs/evaluation.md.
"""


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None, help="VideoTGB checkpoint folder or Hub id (default: the shipped tiny model)"
    )
    parser.add_argument("--questions", metavar="FILE", help="Video-ChatGPT question file (JSON list)")
    parser.add_argument("--answers", metavar="FILE", help="Video-ChatGPT answer file (JSON list)")
    parser.add_argument("--multiple-choice", metavar="FILE", help="multiple-choice set (JSON list or JSONL)")
    parser.add_argument("--synthetic", metavar="DIR", help="folder written by videotgb synthetic generate")
    parser.add_argument("--split", default="test", help="split of --synthetic (default: %(default)s)")
    parser.add_argument("--video-dir", metavar="DIR", help="folder of the videos of --questions / --multiple-choice")
    parser.add_argument(
        "--benchmark-name", default=None, help="name written on every line (default: from the file or folder name)"
    )
    parser.add_argument("--predictions", required=True, metavar="FILE", help="JSONL file to append to (or resume)")
    parser.add_argument(
        "--generation",
        choices=list(GENERATION_PRESETS),
        default="greedy",
        help="greedy (default: deterministic, 64 new tokens) or original (the original VideoTGB's evaluation: "
        "sampling at temperature 0.2, top-p 1.0, 128 new tokens)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=None, help="instead of the preset's")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of --generation original (default: 0)")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="items decoded and answered together (default: %(default)s)"
    )
    parser.add_argument("--limit", type=int, default=None, help="answer only the first N items (a quick run)")
    parser.add_argument("--overwrite", action="store_true", help="replace --predictions instead of resuming it")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--revision", default=None, help="Hub revision of --model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run_command)


def add_run_parser(eval_commands) -> argparse.ArgumentParser:
    """Register `videotgb eval run` on the `eval` command's subparsers."""
    parser = eval_commands.add_parser(
        "run",
        help="answer a benchmark; predictions appended to a JSONL file, resumable",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(parser)
    return parser


def load_items(arguments: argparse.Namespace) -> tuple[list[BenchmarkItem], str, str]:
    """The benchmark the flags name: its items, name and format; ValueError naming the flags when they do not
    name exactly one benchmark."""
    given = [
        name
        for name, present in (
            ("--questions/--answers", arguments.questions or arguments.answers),
            ("--multiple-choice", arguments.multiple_choice),
            ("--synthetic", arguments.synthetic),
        )
        if present
    ]
    if len(given) != 1:
        raise ValueError(
            "give one benchmark: --questions with --answers, --multiple-choice or --synthetic"
            + (f" (got {' and '.join(given)})" if given else "")
        )
    if arguments.synthetic:
        items = load_synthetic(arguments.synthetic, arguments.split)
        return (
            items,
            arguments.benchmark_name or f"{default_benchmark_name(arguments.synthetic)}_{arguments.split}",
            ("synthetic"),
        )
    if arguments.video_dir is None:
        raise ValueError(f"{given[0]} needs --video-dir (the folder of the videos)")
    if not Path(arguments.video_dir).is_dir():
        raise FileNotFoundError(f"--video-dir {arguments.video_dir}: no such folder")
    if arguments.multiple_choice:
        items = load_multiple_choice(arguments.multiple_choice, arguments.video_dir)
        return items, arguments.benchmark_name or default_benchmark_name(arguments.multiple_choice), "multiple_choice"
    if not (arguments.questions and arguments.answers):
        raise ValueError("--questions and --answers go together (the Video-ChatGPT question and answer files)")
    items = load_videochatgpt(arguments.questions, arguments.answers, arguments.video_dir)
    return items, arguments.benchmark_name or default_benchmark_name(arguments.questions), "videochatgpt"


def _run_command(arguments: argparse.Namespace) -> int:
    from ..demo import DEFAULT_MODEL

    items, benchmark, format_ = load_items(arguments)
    model = arguments.model or str(DEFAULT_MODEL)
    summary = run_benchmark(
        model,
        items,
        arguments.predictions,
        benchmark,
        format_,
        generation=arguments.generation,
        max_new_tokens=arguments.max_new_tokens,
        seed=arguments.seed,
        batch_size=arguments.batch_size,
        limit=arguments.limit,
        overwrite=arguments.overwrite,
        device=arguments.device,
        dtype=arguments.dtype,
        revision=arguments.revision,
        progress=not arguments.no_progress,
    )
    print(
        f"{benchmark}: {summary.items} items; {summary.skipped} already in {arguments.predictions}, "
        f"{summary.answered} answered now, {summary.failed} failed (missing or undecodable videos)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m videotgb.evaluation.run ...`, the same as `videotgb eval run ...`."""
    from ..cli import main as cli_main

    return cli_main(["eval", "run", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "GENERATION_PRESETS",
    "MULTIPLE_CHOICE_INSTRUCTION",
    "PredictionsFileError",
    "RunSummary",
    "add_run_parser",
    "answer_batch",
    "generation_settings",
    "load_items",
    "main",
    "multiple_choice_prompt",
    "parse_letter",
    "prediction_line",
    "read_predictions",
    "run_benchmark",
]
