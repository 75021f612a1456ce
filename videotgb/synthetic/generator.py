"""The synthetic long-video grounding benchmark: scenes, videos, questions, splits, index and shards (docs/synthetic.md).

A video is a long, mostly static textured background (a smooth random texture with a little per-frame pixel noise)
in which a few short **events** happen at random times: a flat-coloured shape appears, moves up, down, left or right
and disappears. The events of a video have distinct colours and never overlap in time. One **question** per video asks
about one event (the *asked event*), and its answer can only be read from the frames of that event:

- ``colour``: "What colour is the shape that moves up?" (the asked event is the only one moving up),
- ``direction``: "Which way does the red shape move?" (colours are distinct within a video),
- ``shape``: "What shape moves left?" (the asked event is the only one moving left).

How the pieces fit:

- :class:`SyntheticConfig` holds every setting and refuses impossible ones (:class:`SyntheticConfigError`).
- :func:`make_scene` draws one video's :class:`Scene` (events, question, answer, texture seed) from the seed, the
  split and the video's number, and nothing else: the same three give the same scene.
- :func:`render_frames` draws its frames, :func:`encode_scene` encodes them as H.264 in MP4 with PyAV.
- :func:`generate` writes every split's videos, ``index.json`` and optionally the training shards, built by
  `videotgb.data.build_shards` from a Video-LLaVA-style annotation file (the record id of a sample in the shards is
  its ``id`` in the index, which holds the true spans).
- :func:`load_index` reads ``index.json`` back.

Not remote code: the model, processor and video files never import this package. PyAV and `datasets` are imported
inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..data import (
    DEFAULT_SHARD_SIZE,
    OUTPUT_FORMATS,
    OutputFolderError,
    Source,
    build_shards,
    require_training_extra,
)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 80, 235),
    "yellow": (235, 220, 40),
    "magenta": (220, 50, 220),
    "cyan": (40, 215, 225),
}
"""The palette: colour name → RGB. Saturated, so that they stand apart from the grey background and each other."""

SHAPES = ("square", "circle", "triangle", "diamond")
DIRECTIONS = ("up", "down", "left", "right")
QUESTION_TYPES = ("colour", "direction", "shape")
"""What a question asks about the asked event; the other attributes are the clue that picks the event out."""

MOTION_WORDS = ("move", "moves", "moving", "moved")

NO_EVENT_ANSWER = "none"
"""The gold answer of a video without events (``--events-per-video 0``): its question asks about a motion that does
not happen. Such videos teach a model to say so instead of guessing (the synthetic recipe's answerer learns it, which
keeps its per-frame answers on empty frames from matching a gold answer by chance)."""
"""Every question holds one of these words: questions about this benchmark are questions about motion."""

SPLITS = ("train", "validation", "test", "held_out")
"""``held_out`` asks only about colour–direction pairs (:data:`HELD_OUT_PAIRS`) that no event of another split has."""

HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (colour, DIRECTIONS[number % len(DIRECTIONS)]) for number, colour in enumerate(COLOURS)
)
"""One held-out direction per colour, in turn: every colour and every direction is seen in training, these pairs
never are. (red, up), (green, down), (blue, left), (yellow, right), (magenta, up), (cyan, down)."""

INDEX_NAME = "index.json"
INDEX_VERSION = 1
"""Stored in ``index.json``; raised whenever a field is added, removed or changes meaning."""

_SPLIT_KEYS = {split: number for number, split in enumerate(SPLITS)}
_HELD_OUT_DIRECTION = dict(HELD_OUT_PAIRS)
_MARGIN = 2
"""Pixels between a shape and the frame's edge, at every point of its path."""
_TEXTURE_CELLS = 6
"""The background texture is bilinear interpolation of a grid of this many cells a side of random greys."""
_X264_OPTIONS = {"preset": "veryfast", "crf": "23"}
_X264_PARAMS = "mbtree=0:bframes=0:scenecut=0"
"""Settings that keep files byte-identical from run to run with the same PyAV build (with one encoder thread, set on
the codec context): with macroblock-tree rate control and B-frames, x264 at these tiny sizes gave one of two
different first keyframe groups at random when the machine was busy."""


class SyntheticConfigError(ValueError):
    """A setting of the generator that is impossible (non-positive sizes, events that do not fit in the video, more
    events than colours, ...). The message names the setting by its command-line flag."""


class SyntheticIndexError(ValueError):
    """An ``index.json`` that is missing, not JSON, or of another :data:`INDEX_VERSION`."""


@dataclass(frozen=True)
class SyntheticConfig:
    """Every setting of a generation. Checked when made: impossible settings raise :class:`SyntheticConfigError`.

    Attributes:
        seed: base seed; with the split and the video's number it decides everything about a video.
        num_videos: videos per split, ``{"train": 100, "validation": 100, "test": 100, "held_out": 100}``; a split
            left out or given 0 is not written.
        num_frames: frames per video ``T``.
        fps: frames per second (an integer).
        size: side of the square frames in pixels (even: H.264's 4:2:0 chroma needs it).
        shape_size: side of a shape's bounding box in pixels (default ``size // 4``).
        events_per_video: events per video ``E``, at most one per colour of :data:`COLOURS`; 0 makes videos without
            events, whose question asks about a motion that does not happen (answer :data:`NO_EVENT_ANSWER`).
        event_frames: frames during which a shape is on screen (its motion takes ``event_frames - 1`` steps).
        gap_frames: at least this many frames without a shape between two events.
        question_types: the question types drawn from, uniformly (a subset of :data:`QUESTION_TYPES`).
        noise: standard deviation, in grey levels, of the pixel noise added to every frame.
        keyframe_interval: frames between the keyframes of the encoded videos (default: 4 seconds' worth). Long real
            videos have a keyframe every few seconds, i.e. one or more per candidate bin; a short interval gives the
            synthetic videos that density, to measure keyframe-aligned reading on them.
    """

    seed: int = 0
    num_videos: Mapping[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 100))
    num_frames: int = 256
    fps: int = 8
    size: int = 64
    shape_size: int | None = None
    events_per_video: int = 3
    event_frames: int = 16
    gap_frames: int = 4
    question_types: tuple[str, ...] = QUESTION_TYPES
    noise: float = 2.0
    keyframe_interval: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "num_videos", dict(self.num_videos))
        object.__setattr__(self, "question_types", tuple(self.question_types))
        if self.shape_size is None:
            object.__setattr__(self, "shape_size", self.size // 4 if _is_int(self.size) else self.size)
        self._check()

    def _check(self) -> None:
        for flag, value in (
            ("--seed", self.seed),
            ("--gap-frames", self.gap_frames),
            ("--events-per-video", self.events_per_video),
        ):
            if not _is_int(value) or value < 0:
                raise SyntheticConfigError(f"{flag} {value!r}: must be an integer >= 0")
        for flag, value in (
            ("--frames", self.num_frames),
            ("--fps", self.fps),
            ("--size", self.size),
            ("--shape-size", self.shape_size),
            ("--event-frames", self.event_frames),
        ):
            if not _is_int(value) or value <= 0:
                raise SyntheticConfigError(f"{flag} {value!r}: must be a positive integer")
        unknown = [split for split in self.num_videos if split not in SPLITS]
        if unknown:
            raise SyntheticConfigError(f"num_videos: unknown split(s) {unknown}; the splits are {', '.join(SPLITS)}")
        for split, count in self.num_videos.items():
            if not _is_int(count) or count < 0:
                raise SyntheticConfigError(f"--{split.replace('_', '-')}-videos {count!r}: must be an integer >= 0")
        if not any(self.num_videos.values()):
            raise SyntheticConfigError("--num-videos: every split has 0 videos; nothing to generate")
        if self.size % 2:
            raise SyntheticConfigError(f"--size {self.size}: must be even (H.264's 4:2:0 chroma halves it)")
        if self.size - self.shape_size - 2 * _MARGIN < 2:
            raise SyntheticConfigError(
                f"--shape-size {self.shape_size}: too large for --size {self.size}; a shape needs room to move "
                f"(at most {self.size - 2 * _MARGIN - 2})"
            )
        if self.events_per_video > len(COLOURS):
            raise SyntheticConfigError(
                f"--events-per-video {self.events_per_video}: the events of a video have distinct colours and the "
                f"palette has {len(COLOURS)} ({', '.join(COLOURS)})"
            )
        if self.event_frames < 2:
            raise SyntheticConfigError(f"--event-frames {self.event_frames}: a motion needs at least 2 frames")
        needed = self.events_per_video * self.event_frames + max(self.events_per_video - 1, 0) * self.gap_frames
        if needed > self.num_frames:
            raise SyntheticConfigError(
                f"--frames {self.num_frames}: {self.events_per_video} events of {self.event_frames} frames with "
                f"{self.gap_frames} frames between them need {needed} frames; the events are longer than the video"
            )
        if not self.question_types or any(kind not in QUESTION_TYPES for kind in self.question_types):
            raise SyntheticConfigError(
                f"--question-types {','.join(self.question_types)!r}: expected one or more of "
                f"{', '.join(QUESTION_TYPES)}"
            )
        if len(set(self.question_types)) != len(self.question_types):
            raise SyntheticConfigError(f"--question-types {','.join(self.question_types)!r}: a type is repeated")
        if not isinstance(self.noise, (int, float)) or not 0 <= self.noise < 64:
            raise SyntheticConfigError(f"--noise {self.noise!r}: must be a number in [0, 64)")
        if self.keyframe_interval is not None and (not _is_int(self.keyframe_interval) or self.keyframe_interval < 1):
            raise SyntheticConfigError(f"--keyframe-interval {self.keyframe_interval!r}: must be an integer >= 1")

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values (``index.json``'s ``settings``)."""
        return {**dataclasses.asdict(self), "question_types": list(self.question_types)}


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Event:
    """One shape's appearance: on screen during frames ``[start_frame, end_frame)`` (end excluded), its bounding
    box's top-left corner moving in a straight line from ``start_xy`` (first frame) to ``end_xy`` (last frame)."""

    colour: str
    shape: str
    direction: str
    start_frame: int
    end_frame: int
    start_xy: tuple[int, int]
    end_xy: tuple[int, int]

    def position(self, frame: int) -> tuple[int, int] | None:
        """``(x, y)`` of the bounding box's top-left corner at `frame`, None when the shape is not on screen."""
        if not self.start_frame <= frame < self.end_frame:
            return None
        fraction = (frame - self.start_frame) / (self.end_frame - 1 - self.start_frame)
        return tuple(
            round(start + (end - start) * fraction) for start, end in zip(self.start_xy, self.end_xy, strict=True)
        )

    def span_seconds(self, fps: int) -> tuple[float, float]:
        """``(start_frame / fps, end_frame / fps)``: from the first frame's timestamp to the end of the last frame."""
        return self.start_frame / fps, self.end_frame / fps


@dataclass(frozen=True)
class Scene:
    """Everything about one video and its question; :func:`make_scene` draws it, :func:`render_frames` draws its
    frames. `asked` is the position of the asked event in `events`, which are in time order; -1 in a video without
    events, whose question asks about a motion that does not happen."""

    id: str
    split: str
    number: int
    num_frames: int
    fps: int
    size: int
    shape_size: int
    noise: float
    texture_seed: int
    events: tuple[Event, ...]
    asked: int
    question_type: str
    question: str
    answer: str
    keyframe_interval: int | None = None  # frames between keyframes when encoded (None: 4 seconds' worth)


def question_and_answer(question_type: str, event: Event) -> tuple[str, str]:
    """The question of type `question_type` about `event`, and its gold answer.

    >>> event = Event("red", "circle", "up", 10, 26, (30, 40), (30, 8))
    >>> question_and_answer("colour", event)
    ('What colour is the shape that moves up?', 'red')
    >>> question_and_answer("direction", event)
    ('Which way does the red shape move?', 'up')
    >>> question_and_answer("shape", event)
    ('What shape moves up?', 'circle')
    """
    if question_type == "colour":
        return f"What colour is the shape that moves {event.direction}?", event.colour
    if question_type == "direction":
        return f"Which way does the {event.colour} shape move?", event.direction
    if question_type == "shape":
        return f"What shape moves {event.direction}?", event.shape
    raise SyntheticConfigError(f"question type {question_type!r}: expected one of {', '.join(QUESTION_TYPES)}")


def make_scene(config: SyntheticConfig, split: str, number: int) -> Scene:
    """Draw video `number` of `split`: its events, asked event, question and texture seed.

    The random stream is ``numpy.random.default_rng(SeedSequence(config.seed, spawn_key=(split key, number)))``,
    so every (seed, split, number) has its own independent stream: splits never share one, and a video does not
    depend on how many others are generated.

    The asked event's direction is the only one of its kind in the video (so "the shape that moves up" names one
    event). No event of a regular split has a pair of :data:`HELD_OUT_PAIRS`; in ``held_out`` the asked event has
    one and the other events do not.
    """
    if split not in _SPLIT_KEYS:
        raise SyntheticConfigError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(_SPLIT_KEYS[split], number)))
    count = config.events_per_video
    if count == 0:
        return _scene_without_events(rng, config, split, number)
    colours = [list(COLOURS)[k] for k in rng.choice(len(COLOURS), size=count, replace=False)]
    asked = int(rng.integers(count))
    directions = []
    for position, colour in enumerate(colours):
        if position == asked:
            allowed = (
                [_HELD_OUT_DIRECTION[colour]]
                if split == "held_out"
                else [d for d in DIRECTIONS if d != _HELD_OUT_DIRECTION[colour]]
            )
            directions.append(str(rng.choice(allowed)))
        else:
            directions.append(None)
    for position, colour in enumerate(colours):
        if directions[position] is None:
            allowed = [d for d in DIRECTIONS if d not in (directions[asked], _HELD_OUT_DIRECTION[colour])]
            directions[position] = str(rng.choice(allowed))
    shapes = [SHAPES[k] for k in rng.integers(len(SHAPES), size=count)]
    starts = _event_starts(rng, config)
    events = tuple(
        _event(rng, config, colour, shape, direction, start)
        for colour, shape, direction, start in zip(colours, shapes, directions, starts, strict=True)
    )
    question_type = config.question_types[int(rng.integers(len(config.question_types)))]
    question, answer = question_and_answer(question_type, events[asked])
    return _scene(config, split, number, int(rng.integers(2**63)), events, asked, question_type, question, answer)


def _scene(
    config: SyntheticConfig,
    split: str,
    number: int,
    texture_seed: int,
    events: tuple[Event, ...],
    asked: int,
    question_type: str,
    question: str,
    answer: str,
) -> Scene:
    """The `Scene` of video `number` of `split` drawn with `config`."""
    return Scene(
        id=f"{split}:{number:06d}",
        split=split,
        number=number,
        num_frames=config.num_frames,
        fps=config.fps,
        size=config.size,
        shape_size=config.shape_size,
        noise=float(config.noise),
        texture_seed=texture_seed,
        events=events,
        asked=asked,
        question_type=question_type,
        question=question,
        answer=answer,
        keyframe_interval=config.keyframe_interval,
    )


def _scene_without_events(rng: np.random.Generator, config: SyntheticConfig, split: str, number: int) -> Scene:
    """A video without events: the question is drawn about an event that never happens (its colour, shape and
    direction drawn as for an asked event), and the answer is :data:`NO_EVENT_ANSWER`."""
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    held_out = _HELD_OUT_DIRECTION[colour]
    direction = held_out if split == "held_out" else str(rng.choice([d for d in DIRECTIONS if d != held_out]))
    absent = Event(colour, SHAPES[int(rng.integers(len(SHAPES)))], direction, 0, 0, (0, 0), (0, 0))
    question_type = config.question_types[int(rng.integers(len(config.question_types)))]
    question, _ = question_and_answer(question_type, absent)
    return _scene(config, split, number, int(rng.integers(2**63)), (), -1, question_type, question, NO_EVENT_ANSWER)


def _event_starts(rng: np.random.Generator, config: SyntheticConfig) -> list[int]:
    """First frames of the events, in order: the slack frames are spread uniformly over the ``E + 1`` gaps."""
    count, length = config.events_per_video, config.event_frames
    slack = config.num_frames - count * length - (count - 1) * config.gap_frames
    cuts = sorted(int(value) for value in rng.choice(slack + count, size=count, replace=False))
    return [cut - position + position * (length + config.gap_frames) for position, cut in enumerate(cuts)]


def _event(rng: np.random.Generator, config: SyntheticConfig, colour: str, shape: str, direction: str, start: int):
    """An event of `direction` starting at frame `start`: a travel of half to all of the room the frame leaves."""
    low, high = _MARGIN, config.size - config.shape_size - _MARGIN  # range of the top-left corner
    room = high - low
    travel = int(rng.integers((room + 1) // 2, room + 1))
    across = int(rng.integers(low, high + 1))
    along = int(rng.integers(low, high - travel + 1))  # the smaller end of the path
    sign = 1 if direction in ("down", "right") else -1
    first, last = (along, along + travel) if sign > 0 else (along + travel, along)
    if direction in ("up", "down"):
        start_xy, end_xy = (across, first), (across, last)
    else:
        start_xy, end_xy = (first, across), (last, across)
    return Event(colour, shape, direction, start, start + config.event_frames, start_xy, end_xy)


def shape_mask(shape: str, size: int) -> np.ndarray:
    """`(size, size)` bool mask of a shape in its bounding box.

    >>> shape_mask("diamond", 5).astype(int)
    array([[0, 0, 1, 0, 0],
           [0, 1, 1, 1, 0],
           [1, 1, 1, 1, 1],
           [0, 1, 1, 1, 0],
           [0, 0, 1, 0, 0]])
    """
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    centre = size / 2
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "circle":
        return (xs - centre) ** 2 + (ys - centre) ** 2 <= centre**2
    if shape == "triangle":  # apex up, base along the bottom edge
        return np.abs(xs - centre) <= ys / 2
    if shape == "diamond":
        return np.abs(xs - centre) + np.abs(ys - centre) <= centre
    raise SyntheticConfigError(f"shape {shape!r}: expected one of {', '.join(SHAPES)}")


def background(scene: Scene) -> np.ndarray:
    """`(size, size, 3)` float32 background of a scene: smooth grey texture (levels 60–150) with a faint tint."""
    rng = np.random.default_rng(scene.texture_seed)
    grid = rng.uniform(60, 150, size=(_TEXTURE_CELLS + 1, _TEXTURE_CELLS + 1, 1)) + rng.uniform(-8, 8, size=(1, 1, 3))
    coordinates = np.linspace(0, _TEXTURE_CELLS, scene.size, dtype=np.float64)
    whole = np.minimum(coordinates.astype(int), _TEXTURE_CELLS - 1)
    fraction = (coordinates - whole)[:, None]
    rows = grid[whole] * (1 - fraction[..., None]) + grid[whole + 1] * fraction[..., None]
    texture = rows[:, whole] * (1 - fraction.T[..., None]) + rows[:, whole + 1] * fraction.T[..., None]
    return texture.astype(np.float32)


def render_frames(scene: Scene) -> Iterator[np.ndarray]:
    """The scene's frames in order, each `(size, size, 3)` uint8 RGB: background, pixel noise, then the shape of
    the event on screen (if any) in its flat colour."""
    base = background(scene)
    rng = np.random.default_rng([scene.texture_seed, 1])
    masks = {event.shape: shape_mask(event.shape, scene.shape_size) for event in scene.events}
    side = scene.shape_size
    for frame in range(scene.num_frames):
        noisy = base + scene.noise * rng.standard_normal(base.shape, dtype=np.float32) if scene.noise else base
        image = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        for event in scene.events:
            position = event.position(frame)
            if position is not None:
                x, y = position
                image[y : y + side, x : x + side][masks[event.shape]] = COLOURS[event.colour]
        yield image


def encode_scene(scene: Scene) -> bytes:
    """The scene as an H.264 MP4 file's bytes (PyAV, yuv420p, constant frame rate, a keyframe every
    `scene.keyframe_interval` frames, by default every 4 seconds)."""
    import av

    target = io.BytesIO()
    interval = scene.keyframe_interval or 4 * scene.fps
    options = {**_X264_OPTIONS, "x264-params": f"{_X264_PARAMS}:keyint={interval}"}
    with av.open(target, mode="w", format="mp4") as output:
        stream = output.add_stream("libx264", rate=scene.fps, options=options)
        stream.width = stream.height = scene.size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.time_base = Fraction(1, scene.fps)
        for number, image in enumerate(render_frames(scene)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = number, Fraction(1, scene.fps)
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return target.getvalue()


def video_file(scene: Scene) -> str:
    """Where a scene's video goes, relative to the output folder: ``videos/<split>/<number>.mp4``."""
    return f"videos/{scene.split}/{scene.number:06d}.mp4"


def scene_record(scene: Scene, data: bytes) -> dict[str, Any]:
    """The scene's entry in ``index.json`` (docs/synthetic.md#the-index), given its encoded bytes."""
    asked = scene.events[scene.asked] if scene.asked >= 0 else None
    start_s, end_s = asked.span_seconds(scene.fps) if asked is not None else (None, None)
    return {
        "id": scene.id,
        "split": scene.split,
        "number": scene.number,
        "file": video_file(scene),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "num_frames": scene.num_frames,
        "fps": scene.fps,
        "duration_s": scene.num_frames / scene.fps,
        "width": scene.size,
        "height": scene.size,
        "question_type": scene.question_type,
        "question": scene.question,
        "answer": scene.answer,
        "event": scene.asked,
        "start_frame": asked.start_frame if asked is not None else None,
        "end_frame": asked.end_frame if asked is not None else None,
        "start_s": start_s,
        "end_s": end_s,
        "texture_seed": scene.texture_seed,
        "events": [
            {
                "colour": event.colour,
                "shape": event.shape,
                "direction": event.direction,
                "start_frame": event.start_frame,
                "end_frame": event.end_frame,
                "start_s": event.span_seconds(scene.fps)[0],
                "end_s": event.span_seconds(scene.fps)[1],
                "start_xy": list(event.start_xy),
                "end_xy": list(event.end_xy),
            }
            for event in scene.events
        ],
    }


def _annotation(record: dict[str, Any]) -> dict[str, Any]:
    """A Video-LLaVA record for `videotgb.data.build_shards`: source name = split, so the record id is ``id``."""
    return {
        "id": record["id"].partition(":")[2],
        "video": record["file"],
        "conversations": [
            {"from": "human", "value": f"<video>\n{record['question']}"},
            {"from": "gpt", "value": record["answer"]},
        ],
    }


def _prepare_output(folder: Path, overwrite: bool) -> None:
    """Refuse a folder that holds files unless `overwrite`; with it, remove what a generation writes (and only
    that: ``index.json``, ``videos/``, ``annotations/``, ``shards/``)."""
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"--out {folder}: is a file, not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise OutputFolderError(
                f"--out {folder}: the folder is not empty; choose a new folder or pass --overwrite to replace "
                f"{INDEX_NAME}, videos/, annotations/ and shards/ in it"
            )
        (folder / INDEX_NAME).unlink(missing_ok=True)
        for name in ("videos", "annotations", "shards"):
            if (folder / name).is_dir():
                shutil.rmtree(folder / name)
    folder.mkdir(parents=True, exist_ok=True)


def generate(
    config: SyntheticConfig,
    out: str | os.PathLike,
    *,
    shards: bool = False,
    shard_size: int | str = DEFAULT_SHARD_SIZE,
    format_out: str = "parquet",
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Write every split's videos and ``index.json`` into `out` (and the shards with `shards`); the index.

    Layout: ``videos/<split>/<number>.mp4``, ``index.json`` (written last: its presence means the videos are
    complete) and, with `shards`, ``annotations/<split>.json`` (Video-LLaVA format) and ``shards/<split>/`` built
    from it by `videotgb.data.build_shards` (records in index order; `shard_size` and `format_out` as there).

    Raises:
        OutputFolderError: `out` holds files and `overwrite` is False.
        DataDependencyError: `shards` without `datasets` / `pyarrow`.
    """
    from tqdm.auto import tqdm

    from .. import __version__

    if shards:
        require_training_extra()
        if format_out not in OUTPUT_FORMATS:
            raise ValueError(f"--format-out {format_out!r}: expected one of {', '.join(OUTPUT_FORMATS)}")
    folder = Path(out)
    _prepare_output(folder, overwrite)
    splits = [split for split in SPLITS if config.num_videos.get(split, 0)]
    records: dict[str, list[dict[str, Any]]] = {split: [] for split in splits}
    total = sum(config.num_videos[split] for split in splits)
    with tqdm(total=total, desc="encoding videos", unit="video", disable=not progress, leave=False) as bar:
        for split in splits:
            (folder / "videos" / split).mkdir(parents=True, exist_ok=True)
            for number in range(config.num_videos[split]):
                scene = make_scene(config, split, number)
                data = encode_scene(scene)
                (folder / video_file(scene)).write_bytes(data)
                records[split].append(scene_record(scene, data))
                bar.update()
    index = {
        "index_version": INDEX_VERSION,
        "created_by": f"videotgb {__version__}",
        "settings": config.to_dict(),
        "colours": {name: list(rgb) for name, rgb in COLOURS.items()},
        "shapes": list(SHAPES),
        "directions": list(DIRECTIONS),
        "question_types": list(QUESTION_TYPES),
        "held_out_pairs": [list(pair) for pair in HELD_OUT_PAIRS],
        "splits": {
            split: {"videos": len(records[split]), "bytes": sum(r["bytes"] for r in records[split])}
            for split in splits
        },
        "samples": [record for split in splits for record in records[split]],
    }
    if shards:
        for split in splits:
            index["splits"][split]["shards"] = _build_split_shards(
                folder, split, records[split], shard_size, format_out, progress
            )
    temporary = folder / f".{INDEX_NAME}.tmp"
    temporary.write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, folder / INDEX_NAME)
    return index


def _build_split_shards(
    folder: Path, split: str, records: list[dict[str, Any]], shard_size: int | str, format_out: str, progress: bool
) -> str:
    """Build ``shards/<split>`` with `videotgb.data.build_shards`; the shard folder relative to `folder`."""
    annotations = folder / "annotations" / f"{split}.json"
    annotations.parent.mkdir(parents=True, exist_ok=True)
    annotations.write_text(json.dumps([_annotation(record) for record in records], indent=1) + "\n", encoding="utf-8")
    manifest = build_shards(
        [Source(split, "videollava", annotations, folder)],
        folder / "shards" / split,
        shard_size=shard_size,
        format_out=format_out,
        progress=progress,
    )
    if manifest["records"] != len(records):
        skipped = ", ".join(f"{skip['id']} ({skip['reason']})" for skip in manifest["skipped"]["records"])
        raise OSError(f"shards/{split}: {manifest['records']} of {len(records)} videos went in; skipped {skipped}")
    return f"shards/{split}"


def load_index(out: str | os.PathLike) -> dict[str, Any]:
    """The ``index.json`` of a generation folder; :class:`SyntheticIndexError` naming the file when it cannot be used."""
    path = Path(out) / INDEX_NAME
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SyntheticIndexError(
            f"{path}: no such file; generate the folder with `videotgb synthetic generate`"
        ) from None
    except (OSError, ValueError) as error:
        raise SyntheticIndexError(f"{path}: cannot be read as JSON ({error})") from None
    if not isinstance(index, dict) or index.get("index_version") != INDEX_VERSION:
        version = index.get("index_version") if isinstance(index, dict) else None
        raise SyntheticIndexError(
            f"{path}: index version {version!r}, but this videotgb reads version {INDEX_VERSION}"
        )
    return index


def samples(index: Mapping[str, Any], split: str) -> list[dict[str, Any]]:
    """The samples of one split of an index, in order; ValueError naming the split when it has none."""
    chosen = [sample for sample in index["samples"] if sample["split"] == split]
    if not chosen:
        raise ValueError(f"split {split!r}: the index has no samples of it (it has {', '.join(index['splits'])})")
    return chosen


__all__ = [
    "COLOURS",
    "DIRECTIONS",
    "HELD_OUT_PAIRS",
    "INDEX_NAME",
    "INDEX_VERSION",
    "MOTION_WORDS",
    "NO_EVENT_ANSWER",
    "QUESTION_TYPES",
    "SHAPES",
    "SPLITS",
    "Event",
    "SyntheticIndexError",
    "Scene",
    "SyntheticConfig",
    "SyntheticConfigError",
    "background",
    "encode_scene",
    "generate",
    "load_index",
    "make_scene",
    "question_and_answer",
    "render_frames",
    "samples",
    "scene_record",
    "shape_mask",
    "video_file",
]
