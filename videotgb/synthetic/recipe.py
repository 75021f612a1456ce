"""The recipe of the tiny trained VideoTGB: `videotgb synthetic train` (docs/synthetic.md#the-tiny-trained-model).

One command makes, from nothing but a seed, a VideoTGB small enough to ship inside the package and trained on the
synthetic benchmark, by running the package's own commands in order (each printed before it runs, so anyone can run
them by hand):

1. ``videotgb synthetic generate`` four times: short **clips** that are one event (every frame shows it), slightly
   longer clips that hold one event and frames without it, short clips without any event (the answer is "none"),
   and **long** videos with several events, one of which the question asks about.
2. :func:`init_tiny_model` writes the untrained model: a VideoTGB at a tiny size (ViT, Q-Former, LLaMA-style LM and
   bridge of width 64), with word-level tokenizers built offline with the `tokenizers` library.
3. ``videotgb-train --stage instruct --also_train vision_model language_model`` on the clips: the **answerer** learns
   to answer from frames of the event (the vision tower and the LM are trained in full: they start from random
   weights, unlike a pretrained BLIP-2).
4. ``videotgb data flow`` and ``videotgb data pseudo-spans`` on the long videos, with the answerer: each candidate
   frame answers the question alone, the answers are scored against the gold answer, and the largest rectangle under
   the scores is the pseudo span, as the paper makes its bridge's targets.
5. ``videotgb-train --stage grounding`` on the long videos: the **bridge** learns, from flow and the question only,
   to predict the pseudo spans.

The final folder (``<out>/model``) is a checkpoint like any other (safetensors, processor, remote code) plus
``recipe.json``, which records the settings and the commands. No true span from the index is used in training: the
bridge learns from pseudo spans only.

Not remote code: the model, processor and video files never import this module.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .generator import COLOURS, DIRECTIONS, NO_EVENT_ANSWER, QUESTION_TYPES, SHAPES, SyntheticConfigError

RECIPE_NAME = "recipe.json"
RECIPE_VERSION = 1

MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "processor_config.json",
    "chat_template.jinja",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "qformer_tokenizer",
    "bridge_tokenizer",
)
"""What a checkpoint folder of the recipe keeps (the ones that exist); trainer state, optimizer files and pickled
training arguments stay in the run folders."""

GENERIC_WORDS = (
    "a about above after all an and are as at away be before behind below between both but by can color colour "
    "corner did do does down during each end first for from go goes happens has here how in into is it its left "
    "long many middle more most move moved moves moving near next no not of on one or other out over right scene "
    "screen second see seen shape side small so some start stops that the then there these thing this time to top "
    "turn two under up video was way what when where which while who why will with yes you"
).split()


def vocabulary() -> list[str]:
    """The words the tiny model's tokenizers know: question words, every colour, shape and direction, and a few
    hundred common words (anything else becomes the unknown token)."""
    return list(dict.fromkeys([*GENERIC_WORDS, *COLOURS, *SHAPES, *DIRECTIONS, NO_EVENT_ANSWER]))


@dataclass(frozen=True)
class RecipeSettings:
    """Every setting of `videotgb synthetic train`; checked when made (ValueError naming the flag).

    The defaults make the shipped model: 13 minutes on 2 CPU cores, data, training and precompute included.
    """

    seed: int = 0
    clip_videos: int = 2000
    partial_clip_videos: int = 1000
    partial_clip_frames: int = 24
    empty_clip_videos: int = 700
    long_videos: int = 800
    frames: int = 256
    event_frames: int = 16
    events_per_video: int = 3
    fps: int = 8
    size: int = 64
    question_types: tuple[str, ...] = ("colour",)
    answerer_steps: int = 900
    answerer_batch_size: int = 16
    answerer_learning_rate: float = 2e-3
    grounding_steps: int = 2000
    grounding_batch_size: int = 16
    grounding_learning_rate: float = 1e-3
    workers: int = 1

    def __post_init__(self):
        object.__setattr__(self, "question_types", tuple(self.question_types))
        for flag, value in (
            ("--clip-videos", self.clip_videos),
            ("--partial-clip-videos", self.partial_clip_videos),
            ("--partial-clip-frames", self.partial_clip_frames),
            ("--empty-clip-videos", self.empty_clip_videos),
            ("--long-videos", self.long_videos),
            ("--frames", self.frames),
            ("--event-frames", self.event_frames),
            ("--events-per-video", self.events_per_video),
            ("--fps", self.fps),
            ("--size", self.size),
            ("--answerer-steps", self.answerer_steps),
            ("--answerer-batch-size", self.answerer_batch_size),
            ("--grounding-steps", self.grounding_steps),
            ("--grounding-batch-size", self.grounding_batch_size),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SyntheticConfigError(f"{flag} {value!r}: must be a positive integer")
        if self.partial_clip_frames <= self.event_frames:
            raise SyntheticConfigError(
                f"--partial-clip-frames {self.partial_clip_frames}: must be longer than --event-frames "
                f"{self.event_frames} (a partial clip holds a whole event and frames without it)"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise SyntheticConfigError(f"--seed {self.seed!r}: must be an integer >= 0")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise SyntheticConfigError(f"--workers {self.workers!r}: must be an integer >= 0")
        for flag, value in (
            ("--answerer-learning-rate", self.answerer_learning_rate),
            ("--grounding-learning-rate", self.grounding_learning_rate),
        ):
            if not value > 0:
                raise SyntheticConfigError(f"{flag} {value!r}: must be positive")
        if not self.question_types or any(kind not in QUESTION_TYPES for kind in self.question_types):
            raise SyntheticConfigError(
                f"--question-types {','.join(self.question_types)!r}: expected one or more of {', '.join(QUESTION_TYPES)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "question_types": list(self.question_types)}


SETTING_HELP = {
    "seed": "base seed: of the data (long videos; clips from seed+1..seed+3), the init and training",
    "clip_videos": "clips that are one event (every frame shows the shape)",
    "partial_clip_videos": "clips holding one event and frames without it",
    "partial_clip_frames": "frames of a partial clip (more than --event-frames)",
    "empty_clip_videos": "clips without any event (answer 'none')",
    "long_videos": "long videos the bridge learns on",
    "frames": "frames of a long video",
    "event_frames": "frames of an event (and of a clip that is one)",
    "events_per_video": "events in a long video, one of them asked about",
    "fps": "frames per second of every video",
    "size": "side of the square frames (and of the model's images) in pixels",
    "question_types": "comma-separated question types of every video",
    "answerer_steps": "optimiser steps of the answerer (instruct stage)",
    "answerer_batch_size": "clips per answerer step",
    "answerer_learning_rate": "peak learning rate of the answerer (cosine schedule)",
    "grounding_steps": "optimiser steps of the bridge (grounding stage)",
    "grounding_batch_size": "long videos per grounding step",
    "grounding_learning_rate": "peak learning rate of the bridge (cosine schedule)",
    "workers": "data-loader worker processes of both training stages",
}
"""The help of each setting's flag (`videotgb synthetic train --help`)."""


def build_tokenizers(words: list[str]):
    """A Vicuna-like word-level tokenizer for the language model and a BERT-like WordPiece one (uncased), both
    knowing `words` (lowercase; the LM tokenizer also knows them capitalised)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    punctuation = list("?.,:!<>\n")
    # Cased, like Vicuna's tokenizer: the chat template's `USER` / `ASSISTANT` are tokens of their own, and questions
    # may start with a capital. `dict.fromkeys` keeps the ids contiguous (a repeated word would leave a gap).
    llm_tokens = ["<unk>", "<s>", "</s>", "<pad>", *punctuation, *words, *(word.capitalize() for word in words)]
    llm_tokens += ["USER", "ASSISTANT", "video", "image"]
    llm_vocab = {token: index for index, token in enumerate(dict.fromkeys(llm_tokens))}
    llm = Tokenizer(models.WordLevel(llm_vocab, unk_token="<unk>"))
    llm.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    llm.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    llm.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=llm, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )

    bert_tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *punctuation[:-1], *words]
    bert_vocab = {token: index for index, token in enumerate(dict.fromkeys(bert_tokens))}
    bert = Tokenizer(models.WordPiece(bert_vocab, unk_token="[UNK]"))
    bert.normalizer = normalizers.BertNormalizer(lowercase=True)
    bert.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    bert.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    bert.decoder = decoders.WordPiece()
    bert_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bert,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    return tokenizer, bert_tokenizer


def tiny_config(llm_vocab_size: int, bert_vocab_size: int, bos: int, eos: int, pad: int, image_size: int = 64):
    """The tiny VideoTGB's `VideoTGBConfig`: width 64 everywhere, 8-pixel patches on 64-pixel frames, 4 query
    tokens per keyframe concatenated in time order, a 4-layer bridge (2 with cross-attention) reading 32-pixel DIS
    flow with room for 510 flow steps (the extrapolation tests read 8 to 16 times more steps than training)."""
    from ..configuration_videotgb import VideoTGBConfig

    small = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
    return VideoTGBConfig(
        vision_config={**small, "image_size": image_size, "patch_size": 8, "initializer_range": 0.02},
        qformer_config={**small, "vocab_size": bert_vocab_size, "cross_attention_frequency": 1},
        text_config={
            "model_type": "llama",
            **small,
            "num_key_value_heads": 4,
            "vocab_size": llm_vocab_size,
            "max_position_embeddings": 512,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": pad,
        },
        bridge_config={
            **small,
            "num_hidden_layers": 4,
            "fusion_layer": 2,
            "vocab_size": bert_vocab_size,
            "flow_size": 32,
            "flow_patch_size": 8,
            "flow_estimator": "dis",
            "max_position_embeddings": 512,
            "max_text_positions": 64,
        },
        num_query_tokens=4,
        frame_aggregation="concat",
    )


def init_tiny_model(out: str | os.PathLike, seed: int = 0, image_size: int = 64) -> Path:
    """Write the untrained tiny VideoTGB (model with random weights drawn from `seed`, and its processor) to `out`."""
    import torch
    from transformers import BlipImageProcessor

    from ..modeling_videotgb import VideoTGBForConditionalGeneration
    from ..processing_videotgb import VideoTGBProcessor

    tokenizer, bert_tokenizer = build_tokenizers(vocabulary())
    config = tiny_config(
        len(tokenizer),
        len(bert_tokenizer),
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        image_size,
    )
    torch.manual_seed(seed)
    model = VideoTGBForConditionalGeneration(config)
    processor = VideoTGBProcessor(
        BlipImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer,
        bert_tokenizer,
        copy.deepcopy(bert_tokenizer),
        num_candidate_frames=config.num_candidate_frames,
        max_flow_steps=64,
        flow_config={"estimator": "dis", "size": config.bridge_config.flow_size},
    )
    folder = Path(out)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _videotgb(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "videotgb.cli", *arguments]


def _train(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "videotgb.train", *arguments]


def recipe_commands(settings: RecipeSettings, out: Path) -> list[tuple[str, list[str]]]:
    """The recipe's steps as `(name, command)` pairs, in order; `init` (no command) is done in-process."""
    s = settings
    data, side, runs = out / "data", out / "side", out / "runs"
    types = ",".join(s.question_types)
    common = ["--fps", str(s.fps), "--size", str(s.size), "--question-types", types, "--shards", "--no-progress"]
    no_eval_splits = ["--validation-videos", "0", "--test-videos", "0", "--held-out-videos", "0"]
    training = [
        "--seed", str(s.seed), "--save_strategy", "no", "--logging_steps", "25", "--dataloader_num_workers",
        str(s.workers), "--disable_tqdm", "true", "--lr_scheduler_type", "cosine", "--weight_decay", "0.0",
    ]  # fmt: skip

    def generate_step(folder: str, seed: int, videos: int, frames: int, events: int) -> list[str]:
        return _videotgb(
            "synthetic", "generate", "--out", str(data / folder), "--seed", str(seed), "--train-videos", str(videos),
            *no_eval_splits, "--frames", str(frames), "--event-frames", str(s.event_frames), "--events-per-video",
            str(events), *common,
        )  # fmt: skip

    return [
        ("clips", generate_step("clips", s.seed + 1, s.clip_videos, s.event_frames, 1)),
        ("partial clips", generate_step("partial", s.seed + 3, s.partial_clip_videos, s.partial_clip_frames, 1)),
        ("empty clips", generate_step("empty", s.seed + 2, s.empty_clip_videos, s.event_frames, 0)),
        ("long videos", generate_step("long", s.seed, s.long_videos, s.frames, s.events_per_video)),
        ("init", []),
        (
            "answerer",
            _train(
                "--stage", "instruct", "--also_train", "vision_model", "language_model", "--model", str(runs / "init"),
                "--train_files", str(data / "clips" / "shards" / "train"), str(data / "partial" / "shards" / "train"),
                str(data / "empty" / "shards" / "train"),
                "--source_probabilities", *_mix(s.clip_videos, s.partial_clip_videos, s.empty_clip_videos),
                "--source_stopping_strategy", "all_exhausted", "--output_dir", str(runs / "answerer"),
                "--max_steps", str(s.answerer_steps), "--per_device_train_batch_size", str(s.answerer_batch_size),
                "--learning_rate", str(s.answerer_learning_rate), *training,
            ),
        ),
        (
            "flow",
            _videotgb(
                "data", "flow", "--shards", str(data / "long" / "shards" / "train"), "--model", str(runs / "answerer"),
                "--output", str(side / "flow"), "--no-progress",
            ),
        ),
        (
            "pseudo spans",
            _videotgb(
                "data", "pseudo-spans", "--shards", str(data / "long" / "shards" / "train"), "--model",
                str(runs / "answerer"), "--output", str(side / "spans"), "--max-new-tokens", "4", "--no-progress",
            ),
        ),
        (
            "grounding",
            _train(
                "--stage", "grounding", "--model", str(runs / "answerer"), "--train_files",
                str(data / "long" / "shards" / "train"), "--side_files", str(side / "flow"), str(side / "spans"),
                "--output_dir", str(runs / "grounding"), "--max_steps", str(s.grounding_steps),
                "--per_device_train_batch_size", str(s.grounding_batch_size), "--learning_rate",
                str(s.grounding_learning_rate), *training,
            ),
        ),
    ]  # fmt: skip


def _mix(*counts: int) -> list[str]:
    """Source probabilities proportional to the sources' sizes, as strings for the command line."""
    total = sum(counts)
    return [f"{count / total:.4f}" for count in counts]


def copy_checkpoint(source: Path, destination: Path) -> None:
    """Copy a checkpoint's model and processor files (:data:`MODEL_FILES`, plus the remote-code ``.py`` files) from a
    training run's output folder."""
    destination.mkdir(parents=True, exist_ok=True)
    names = [name for name in MODEL_FILES if (source / name).exists()]
    names += sorted(path.name for path in source.glob("*.py"))
    for name in names:
        if (source / name).is_dir():
            shutil.copytree(source / name, destination / name, dirs_exist_ok=True)
        else:
            shutil.copy2(source / name, destination / name)


def run_recipe(settings: RecipeSettings, out: str | os.PathLike, overwrite: bool = False, log=print) -> Path:
    """Run every step of the recipe into `out`; return the final checkpoint folder ``<out>/model``.

    Each step's command is logged before it runs; a failing step raises RuntimeError naming it, with the command
    and its exit status (its own error message is above, on stderr).
    """
    folder = Path(out)
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise OSError(f"--out {folder}: the folder is not empty; choose a new folder or pass --overwrite")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "PYTHONHASHSEED": "0", "TOKENIZERS_PARALLELISM": "false"}
    timings: dict[str, float] = {}
    commands = recipe_commands(settings, folder)
    for number, (name, command) in enumerate(commands, 1):
        started = time.perf_counter()
        if not command:
            log(f"[{number}/{len(commands)}] {name}: the untrained tiny model -> {folder / 'runs' / 'init'}")
            init_tiny_model(folder / "runs" / "init", seed=settings.seed, image_size=settings.size)
        else:
            log(f"[{number}/{len(commands)}] {name}: {shlex.join(_display(command))}")
            completed = subprocess.run(command, env=environment, check=False)
            if completed.returncode:
                raise RuntimeError(
                    f"step {name!r} failed with exit status {completed.returncode}: {shlex.join(command)}"
                )
        timings[name] = round(time.perf_counter() - started, 1)
    model = folder / "model"
    copy_checkpoint(folder / "runs" / "grounding", model)
    recipe = {
        "recipe_version": RECIPE_VERSION,
        "description": f"tiny VideoTGB trained on synthetic videos by `videotgb synthetic train --seed {settings.seed}`",
        "settings": settings.to_dict(),
        "out": str(folder),
        "commands": [shlex.join(_display(command)) for _, command in commands if command],
        "seconds": timings,
        "train_results": {
            stage: json.loads((folder / "runs" / stage / "train_results.json").read_text())
            for stage in ("answerer", "grounding")
        },
    }
    (model / RECIPE_NAME).write_text(json.dumps(recipe, indent=1) + "\n", encoding="utf-8")
    log(f"model: {model} ({sum(timings.values()):.0f} s)")
    return model


def _display(command: list[str]) -> list[str]:
    """A command as a user would type it: ``videotgb ...`` / ``videotgb-train ...`` instead of the interpreter."""
    if command[:3] == [sys.executable, "-m", "videotgb.cli"]:
        return ["videotgb", *command[3:]]
    if command[:3] == [sys.executable, "-m", "videotgb.train"]:
        return ["videotgb-train", *command[3:]]
    return command


__all__ = [
    "MODEL_FILES",
    "SETTING_HELP",
    "build_tokenizers",
    "RECIPE_NAME",
    "RecipeSettings",
    "copy_checkpoint",
    "init_tiny_model",
    "recipe_commands",
    "run_recipe",
    "tiny_config",
    "vocabulary",
]
