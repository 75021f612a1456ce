"""Reading annotation files into records of the shard schema, and checking their media (docs/data.md#input-formats).

Nothing here is fatal for one bad record: a record that cannot be used becomes a :class:`Skip` naming its id and the
reason (one of :data:`SKIP_REASONS`). Only a missing or unparseable annotation file raises
(:class:`AnnotationsError`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = ("videoinstruct", "llava", "videollava", "text")
"""Annotation formats: Video-ChatGPT VideoInstruct-100K, LLaVA image-instruct, Video-LLaVA mixed, text-only."""

VIDEO_EXTENSIONS = ("mp4", "mkv", "webm", "avi", "mov")
"""Tried in this order for a VideoInstruct `video_id` that names no existing file by itself."""

SKIP_REASONS = ("malformed", "media_outside_root", "missing_media", "empty_media", "undecodable_media")

_PLACEHOLDER = re.compile(r"\s*<(?:image|video)>\s*")
_SPEAKERS = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt"}


class AnnotationsError(OSError):
    """An annotation file that is missing, unreadable or not JSON at all (a one-line CLI error naming the file)."""


@dataclass(frozen=True)
class Source:
    """One annotation file: its `name` (prefix of the record ids), `format` (one of :data:`FORMATS`), the JSON file and
    the folder its media paths are relative to (`None` for text-only sources)."""

    name: str
    format: str
    annotations: Path
    media_root: Path | None = None


@dataclass(frozen=True)
class Entry:
    """A record that parsed; `media_path` is the resolved file inside the media root (None for text)."""

    id: str
    source: str
    kind: str
    question: str
    answer: str
    conversation: str
    media_name: str | None = None
    media_path: str | None = None
    media_size: int = 0

    def record_bytes(self) -> int:
        """About what the record takes in a shard: the media file and the text fields."""
        texts = (self.id, self.question, self.answer, self.conversation)
        return self.media_size + sum(len(value.encode()) for value in texts)


@dataclass(frozen=True)
class Skip:
    """A record left out of the shards, with its id, its source, one of :data:`SKIP_REASONS` and the details."""

    id: str
    source: str
    reason: str
    detail: str


class _Malformed(Exception):
    pass


class _MediaProblem(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def parse_source(spec: str) -> tuple[str | None, str, str]:
    """Split a ``--source`` value ``[NAME:]FORMAT=PATH`` into (name or None, format, path).

    >>> parse_source("videoinstruct=VideoInstruct100K.json")
    (None, 'videoinstruct', 'VideoInstruct100K.json')
    >>> parse_source("chat:llava=llava_instruct_150k.json")
    ('chat', 'llava', 'llava_instruct_150k.json')
    """
    head, separator, path = spec.partition("=")
    name, _, format_ = head.rpartition(":")
    if not separator or not path or format_ not in FORMATS:
        raise ValueError(f"--source {spec!r}: expected [NAME:]FORMAT=PATH with FORMAT one of {', '.join(FORMATS)}")
    if name and not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"--source {spec!r}: a source name may hold letters, digits, '_', '-' and '.' only")
    return name or None, format_, path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_annotations(path: Path) -> list[Any]:
    """The JSON list of an annotation file; :class:`AnnotationsError` naming the file when it cannot be used."""
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except FileNotFoundError:
        raise AnnotationsError(f"{path}: no such annotation file") from None
    except IsADirectoryError:
        raise AnnotationsError(f"{path}: is a folder, not an annotation file") from None
    except UnicodeDecodeError as error:
        raise AnnotationsError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise AnnotationsError(
            f"{path}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
        ) from None
    except OSError as error:
        raise AnnotationsError(f"{path}: cannot be read ({error.strerror or error})") from None
    if not isinstance(data, list):
        raise AnnotationsError(f"{path}: expected a JSON list of records, found a JSON {type(data).__name__}")
    return data


def read_source(source: Source) -> tuple[list[Entry], list[Skip]]:
    """Parse every record of `source` in file order and resolve its media path (no media is opened here).

    Ids are ``<source name>:<original id>``; the original id is the record's ``id`` (``video_id`` for VideoInstruct,
    which lists several questions per video), or its position in the file when it has none. A repeated original id
    gets ``#2``, ``#3`` ... in order of appearance.
    """
    records = load_annotations(source.annotations)
    root = source.media_root.resolve() if source.media_root is not None else None
    entries: list[Entry] = []
    skips: list[Skip] = []
    seen: dict[str, int] = {}
    for position, record in enumerate(records):
        original = _original_id(record, source.format, position)
        seen[original] = seen.get(original, 0) + 1
        record_id = f"{source.name}:{original}" + (f"#{seen[original]}" if seen[original] > 1 else "")
        try:
            kind, question, answer, turns, media = _parse_record(record, source.format)
        except _Malformed as error:
            skips.append(Skip(record_id, source.name, "malformed", str(error)))
            continue
        conversation = json.dumps(turns, ensure_ascii=False)
        entry = Entry(record_id, source.name, kind, question, answer, conversation)
        if kind == "text":
            entries.append(entry)
            continue
        if root is None:
            skips.append(Skip(record_id, source.name, "missing_media", f"{media!r}: the source has no media root"))
            continue
        try:
            name, path, size = _locate_media(root, media, source.format == "videoinstruct")
        except _MediaProblem as problem:
            skips.append(Skip(record_id, source.name, problem.reason, problem.detail))
            continue
        entries.append(Entry(record_id, source.name, kind, question, answer, conversation, name, str(path), size))
    return entries, skips


def check_media(entry: Entry) -> Skip | None:
    """Open the record's media cheaply: a video with `video_io.probe_video` (header and first frame), an image with
    PIL's `verify`. A :class:`Skip` (``undecodable_media``) when it does not open, None when it does or for text."""
    if entry.media_path is None:
        return None
    try:
        if entry.kind == "video":
            from ..video_io import probe_video

            probe_video(entry.media_path)
        else:
            from PIL import Image

            with Image.open(entry.media_path) as image:
                image.verify()
    except Exception as error:  # any failure to open is a property of the file: report it and go on
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        return Skip(entry.id, entry.source, "undecodable_media", f"{entry.media_name}: {detail}")
    return None


def _original_id(record: Any, format_: str, position: int) -> str:
    key = "video_id" if format_ == "videoinstruct" else "id"
    value = record.get(key) if isinstance(record, dict) else None
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        return str(position)
    return str(value)


def _text(record: dict, key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise _Malformed(f"{key!r} is missing" if value is None else f"{key!r} is a {type(value).__name__}, not text")
    return value


def _strip_placeholders(text: str) -> str:
    return _PLACEHOLDER.sub(" ", text).strip()


def _parse_record(record: Any, format_: str) -> tuple[str, str, str, list[dict[str, str]], str | None]:
    """(kind, question, answer, turns, media path) of one record; `_Malformed` saying what is wrong otherwise."""
    if not isinstance(record, dict):
        raise _Malformed(f"a record must be a JSON object, not a {type(record).__name__}")
    if format_ == "videoinstruct":
        media = _text(record, "video_id")
        question, answer = _text(record, "q").strip(), _text(record, "a").strip()
        turns = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
        kind = "video"
    elif format_ == "text" and "conversations" not in record:
        instruction, answer = _text(record, "instruction").strip(), _text(record, "output").strip()
        extra = record.get("input", "")
        if not isinstance(extra, str):
            raise _Malformed(f"'input' is a {type(extra).__name__}, not text")
        question = f"{instruction}\n\n{extra.strip()}" if extra.strip() else instruction
        turns = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
        kind, media = "text", None
    else:
        kind, media = _media_of(record, format_)
        turns = _turns(record)
        question, answer = _first_exchange(turns)
    if not question:
        raise _Malformed("the question is empty")
    if not answer:
        raise _Malformed("the answer is empty")
    return kind, question, answer, turns, media


def _media_of(record: dict, format_: str) -> tuple[str, str | None]:
    keys = [key for key in ("image", "video") if record.get(key) is not None]
    if format_ == "text" and keys:
        raise _Malformed(f"a text-only source has a record with {keys[0]!r}")
    if format_ == "llava" and "video" in keys:
        raise _Malformed("a LLaVA image record has 'video'; use the videollava format")
    if len(keys) > 1:
        raise _Malformed("the record has both 'image' and 'video'; one media file per record")
    if not keys:
        return "text", None
    value = record[keys[0]]
    if not isinstance(value, str) or not value:
        raise _Malformed(f"{keys[0]!r} must be one relative path, not {type(value).__name__} {value!r}"[:200])
    return keys[0], value


def _turns(record: dict) -> list[dict[str, str]]:
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise _Malformed("'conversations' is missing or not a non-empty list")
    normalised = []
    for number, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise _Malformed(f"turn {number} is not an object with a text 'value'")
        speaker = _SPEAKERS.get(str(turn.get("from", "")).lower())
        if speaker is None:
            raise _Malformed(f"turn {number} is from {turn.get('from')!r}, not human or gpt")
        normalised.append({"from": speaker, "value": _strip_placeholders(turn["value"])})
    return normalised


def _first_exchange(turns: list[dict[str, str]]) -> tuple[str, str]:
    humans = [number for number, turn in enumerate(turns) if turn["from"] == "human"]
    if not humans:
        raise _Malformed("no human turn")
    first = humans[0]
    answers = [turn["value"] for turn in turns[first + 1 :] if turn["from"] == "gpt"]
    if not answers:
        raise _Malformed("no gpt turn after the first human turn")
    return turns[first]["value"], answers[0]


def _locate_media(root: Path, name: str, try_extensions: bool) -> tuple[str, Path, int]:
    """(name, resolved path, size) of a media file inside `root`; `_MediaProblem` (skip reason, detail) otherwise."""
    if os.path.isabs(name) or Path(name).is_absolute():
        raise _MediaProblem("media_outside_root", f"{name!r} is an absolute path")
    candidates = [name]
    if try_extensions:
        candidates += [f"{name}.{extension}" for extension in VIDEO_EXTENSIONS]
    for candidate in candidates:
        resolved = (root / candidate).resolve()
        if not resolved.is_relative_to(root):
            raise _MediaProblem("media_outside_root", f"{candidate!r} resolves to {resolved}, outside the media root")
        if resolved.is_file():
            size = resolved.stat().st_size
            if size == 0:
                raise _MediaProblem("empty_media", f"{candidate!r} is an empty file")
            return candidate, resolved, size
    if try_extensions:
        tried = f"{name}.{{{','.join(VIDEO_EXTENSIONS)}}}"
        raise _MediaProblem("missing_media", f"neither {name!r} nor {tried!r} is a file under the media root")
    raise _MediaProblem("missing_media", f"{name!r} is not a file under the media root")
