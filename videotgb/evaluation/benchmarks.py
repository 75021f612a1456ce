"""Benchmarks that `videotgb eval run` answers, read into :class:`BenchmarkItem` lists (docs/evaluation.md).

Three formats:

- ``videochatgpt``: Video-ChatGPT's zero-shot QA files (MSVD-QA, MSRVTT-QA, ActivityNet-QA): a question file, a JSON
  list of ``{"video_name", "question", "question_id"}``, and an answer file, a JSON list of ``{"answer",
  "question_id", ...}``. They are paired by ``question_id``, never by position. A video name becomes a file under
  the video folder by trying the extensions of :data:`VIDEO_EXTENSIONS`, with and without ActivityNet's ``v_``
  prefix (:func:`find_video`).
- ``multiple_choice``: NExT-QA / EgoSchema / Video-MME style sets in a JSON list or a JSONL file, one question per
  record with its options and the answer as a letter or a 0-based index (:func:`load_multiple_choice` lists the
  field names it reads).
- ``synthetic``: one split of a folder written by `videotgb synthetic generate` (its ``index.json``), with the asked
  event's true span.

A video that cannot be found is not an error here: the item keeps ``video=None`` and says why in ``problem``, and
the run writes it as a failed item. Files that do not parse, ids that disagree or repeat, and answers that are not
one of the options are errors (:class:`BenchmarkError`) naming the file and the item.

Not remote code: the model, processor and video files never import this module.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = ("videochatgpt", "multiple_choice", "synthetic")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov")
"""Tried in this order after the name itself; upper-case variants too."""

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class BenchmarkError(ValueError):
    """A benchmark file that cannot be used, naming the file and the item."""


@dataclass(frozen=True)
class BenchmarkItem:
    """One question of a benchmark.

    Attributes:
        id: unique within the benchmark (``question_id``, the record's id, or the synthetic sample's id).
        video: the video file, or None when it was not found (then `problem` says why).
        question: the question as the benchmark gives it (multiple choice: without the options).
        answer: the gold answer; for multiple choice its letter (``"A"``, ``"B"`` ...).
        options: multiple choice only: the option texts in letter order.
        gold_span_seconds: ``(start, end)`` of the asked event, when the benchmark gives one (synthetic).
        problem: why the item cannot be answered (e.g. ``missing video: ...``), or None.
    """

    id: str
    video: Path | None
    question: str
    answer: str
    options: tuple[str, ...] | None = None
    gold_span_seconds: tuple[float, float] | None = None
    problem: str | None = None


def find_video(video_dir: str | os.PathLike, name: str) -> Path | None:
    """The file under `video_dir` that a benchmark's video `name` refers to, or None.

    Tried in order: the name as given (it may carry its extension), then the name with each of
    :data:`VIDEO_EXTENSIONS` (lower and upper case), each for the name itself, the name with ActivityNet's ``v_``
    prefix added, and the name without it.
    """
    folder = Path(video_dir)
    stems = [name, f"v_{name}"] + ([name[2:]] if name.startswith("v_") else [])
    candidates = [folder / name] + [
        folder / f"{stem}{extension}"
        for stem in stems
        for extension in (*VIDEO_EXTENSIONS, *(ext.upper() for ext in VIDEO_EXTENSIONS))
    ]
    return next((path for path in candidates if path.is_file()), None)


def _item_with_video(video_dir: Path, name: str, **fields: Any) -> BenchmarkItem:
    path = find_video(video_dir, name)
    problem = None
    if path is None:
        problem = (
            f"missing video: {video_dir / name} (no file named {name!r} with or without v_ and one of "
            f"{', '.join(VIDEO_EXTENSIONS)} under {video_dir})"
        )
    return BenchmarkItem(video=path, problem=problem, **fields)


def _read_json_list(path: Path, what: str) -> list[Any]:
    """A JSON list (``.json``) or one JSON value per line (``.jsonl``); BenchmarkError naming the file (and line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchmarkError(f"{what} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BenchmarkError(f"{what} {path}: cannot be read ({error})") from None
    if path.suffix.lower() == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise BenchmarkError(f"{what} {path}, line {number}: not JSON ({error.msg})") from None
        return records
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        raise BenchmarkError(f"{what} {path}: not JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(records, list):
        raise BenchmarkError(f"{what} {path}: expected a JSON list of records, got {type(records).__name__}")
    return records


def _field(record: Any, names: Sequence[str], where: str) -> Any:
    if not isinstance(record, Mapping):
        raise BenchmarkError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for name in names:
        if record.get(name) is not None:
            return record[name]
    raise BenchmarkError(f"{where}: no {' / '.join(repr(name) for name in names)} field")


def _sample_ids(ids: Sequence[str], count: int = 5) -> str:
    shown = ", ".join(map(repr, sorted(ids)[:count]))
    return shown + (f" and {len(ids) - count} more" if len(ids) > count else "")


def _check_unique(ids: Sequence[str], path: Path) -> None:
    seen: set[str] = set()
    repeated = {item_id for item_id in ids if item_id in seen or seen.add(item_id)}
    if repeated:
        raise BenchmarkError(f"{path}: question ids repeat: {_sample_ids(list(repeated))}")


def load_videochatgpt(
    questions: str | os.PathLike, answers: str | os.PathLike, video_dir: str | os.PathLike
) -> list[BenchmarkItem]:
    """Items of a Video-ChatGPT QA benchmark, in the question file's order, paired with answers by ``question_id``.

    Raises:
        BenchmarkError: a file that is missing or not a JSON list of objects, a record without its fields, ids that
            repeat, or question and answer files whose ids disagree (naming both files and some of the ids).
    """
    questions, answers, video_dir = Path(questions), Path(answers), Path(video_dir)
    question_records = _read_json_list(questions, "--questions")
    answer_records = _read_json_list(answers, "--answers")
    question_ids = [
        str(_field(record, ["question_id"], f"--questions {questions}, record {number}"))
        for number, record in enumerate(question_records)
    ]
    gold: dict[str, str] = {}
    for number, record in enumerate(answer_records):
        where = f"--answers {answers}, record {number}"
        answer_id = str(_field(record, ["question_id"], where))
        if answer_id in gold:
            raise BenchmarkError(f"{answers}: question id {answer_id!r} has more than one answer")
        gold[answer_id] = str(_field(record, ["answer"], where))
    _check_unique(question_ids, questions)
    only_questions = sorted(set(question_ids) - gold.keys())
    only_answers = sorted(gold.keys() - set(question_ids))
    if only_questions or only_answers:
        parts = []
        if only_questions:
            parts.append(f"{len(only_questions)} ids only in {questions} ({_sample_ids(only_questions)})")
        if only_answers:
            parts.append(f"{len(only_answers)} ids only in {answers} ({_sample_ids(only_answers)})")
        raise BenchmarkError(
            f"--questions {questions} and --answers {answers} do not hold the same question ids: " + "; ".join(parts)
        )
    items = []
    for item_id, record in zip(question_ids, question_records, strict=True):
        where = f"--questions {questions}, question {item_id!r}"
        name = str(_field(record, ["video_name", "video"], where))
        question = str(_field(record, ["question"], where))
        items.append(_item_with_video(video_dir, name, id=item_id, question=question, answer=gold[item_id]))
    return items


_ID_FIELDS = ("id", "question_id", "q_uid", "uid")
_VIDEO_FIELDS = ("video", "video_name", "video_id", "videoID", "video_path", "q_uid")
_OPTION_PREFIX = re.compile(r"^\s*\(?([A-Z])[.):]\s*")


def _options(record: Mapping[str, Any], where: str) -> list[str]:
    """The option texts of a record: ``options`` (a list, with or without ``"A. "`` prefixes), or the numbered
    fields ``a0``, ``a1`` ... (NExT-QA) or ``option 0``, ``option 1`` ... (EgoSchema)."""
    if isinstance(record.get("options"), list):
        options = [str(option) for option in record["options"]]
        prefixes = [_OPTION_PREFIX.match(option) for option in options]
        if options and all(
            match and match.group(1) == LETTERS[number] for number, match in enumerate(prefixes)
        ):  # Video-MME's "A. text": the letter is the position, the text follows
            options = [option[match.end() :] for option, match in zip(options, prefixes, strict=True)]
    else:
        options = []
        for prefix in ("a", "option ", "option_"):
            while record.get(f"{prefix}{len(options)}") is not None:
                options.append(str(record[f"{prefix}{len(options)}"]))
            if options:
                break
    if len(options) < 2:
        raise BenchmarkError(
            f"{where}: needs at least two options ('options' list, or fields a0, a1, ... or 'option 0', 'option 1', "
            f"...), found {len(options)}"
        )
    if len(options) > len(LETTERS):
        raise BenchmarkError(f"{where}: {len(options)} options, more than the {len(LETTERS)} letters A-Z")
    return options


def answer_letter(answer: Any, num_options: int, where: str) -> str:
    """The gold answer as a letter: a letter (``"B"``, ``"(B)"``, ``"B."``) or a 0-based index (``1``, ``"1"``);
    BenchmarkError naming `where` when it is neither or lies beyond the options.

    Examples:
        >>> answer_letter("(c)", 4, "item 1"), answer_letter(0, 4, "item 1")
        ('C', 'A')
    """
    valid = LETTERS[:num_options]
    if isinstance(answer, bool):
        letter = None
    elif isinstance(answer, int) or (isinstance(answer, str) and answer.strip().isdigit()):
        index = int(answer)
        letter = LETTERS[index] if 0 <= index < num_options else None
    elif isinstance(answer, str) and (match := re.fullmatch(r"\s*\(?([A-Za-z])[.)]?\s*", answer)):
        letter = match.group(1).upper()
    else:
        letter = None
    if letter is None or letter not in valid:
        raise BenchmarkError(
            f"{where}: answer {answer!r} is not one of the {num_options} options (letters {valid[0]}-{valid[-1]} or "
            f"indices 0-{num_options - 1})"
        )
    return letter


def load_multiple_choice(path: str | os.PathLike, video_dir: str | os.PathLike) -> list[BenchmarkItem]:
    """Items of a multiple-choice set (a JSON list or JSONL), in file order.

    Fields read from each record (the first present of each list):

    - id: ``id``, ``question_id``, ``q_uid``, ``uid``; else ``qid`` joined to the video (NExT-QA's ``qid`` counts
      within a video);
    - video: ``video``, ``video_name``, ``video_id``, ``videoID``, ``video_path``, ``q_uid`` (EgoSchema names its
      videos by question);
    - question: ``question``;
    - options: ``options`` (list), or ``a0``, ``a1`` ... or ``option 0``, ``option 1`` ...;
    - answer: ``answer`` (or ``truth``): a letter or a 0-based index.

    Raises:
        BenchmarkError: a record without these fields, an answer beyond the options, or ids that repeat.
    """
    path, video_dir = Path(path), Path(video_dir)
    items = []
    for number, record in enumerate(_read_json_list(path, "--multiple-choice")):
        where = f"--multiple-choice {path}, record {number}"
        video = str(_field(record, _VIDEO_FIELDS, where))
        if any(record.get(name) is not None for name in _ID_FIELDS):
            item_id = str(_field(record, _ID_FIELDS, where))
        else:
            item_id = f"{video}_{_field(record, ['qid'], where + ' (no id field)')}"
        where = f"--multiple-choice {path}, item {item_id!r} (record {number})"
        options = _options(record, where)
        letter = answer_letter(_field(record, ["answer", "truth"], where), len(options), where)
        question = str(_field(record, ["question"], where))
        items.append(
            _item_with_video(video_dir, video, id=item_id, question=question, answer=letter, options=tuple(options))
        )
    _check_unique([item.id for item in items], path)
    return items


def load_synthetic(folder: str | os.PathLike, split: str = "test") -> list[BenchmarkItem]:
    """Items of one split of a folder written by `videotgb synthetic generate`, with the asked event's span in
    seconds (None for videos without events)."""
    from ..synthetic import load_index, samples

    folder = Path(folder)
    try:
        chosen = samples(load_index(folder), split)
    except ValueError as error:
        raise BenchmarkError(f"--synthetic {folder}: {error}") from None
    items = []
    for sample in chosen:
        video = folder / sample["file"]
        span = None if sample.get("start_s") is None else (float(sample["start_s"]), float(sample["end_s"]))
        items.append(
            BenchmarkItem(
                id=str(sample["id"]),
                video=video if video.is_file() else None,
                question=sample["question"],
                answer=sample["answer"],
                gold_span_seconds=span,
                problem=None if video.is_file() else f"missing video: {video} (sample {sample['id']} of {folder})",
            )
        )
    return items


def default_benchmark_name(path: str | os.PathLike) -> str:
    """A benchmark name from a file or folder name: ``test_q.json`` in ``MSVD_Zero_Shot_QA/`` gives
    ``msvd_zero_shot_qa_test``; ``nextqa_val.jsonl`` gives ``nextqa_val``.

    Examples:
        >>> default_benchmark_name("data/MSVD_Zero_Shot_QA/test_q.json")
        'msvd_zero_shot_qa_test'
        >>> default_benchmark_name("nextqa_val.jsonl")
        'nextqa_val'
    """
    path = Path(path)
    stem = re.sub(r"_q(uestions?)?$", "", path.stem if path.suffix else path.name)
    if stem in ("test", "val", "validation", "questions") and path.parent.name:
        stem = f"{path.parent.name}_{stem}"
    return re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_")


__all__ = [
    "FORMATS",
    "LETTERS",
    "VIDEO_EXTENSIONS",
    "BenchmarkError",
    "BenchmarkItem",
    "answer_letter",
    "default_benchmark_name",
    "find_video",
    "load_multiple_choice",
    "load_synthetic",
    "load_videochatgpt",
]
