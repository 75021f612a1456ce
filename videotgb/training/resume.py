"""Resuming `videotgb-train` where a checkpoint left off, without decoding the videos already trained on again.

`Trainer` restores weights, optimizer, scheduler and random state from a checkpoint; by default it then re-reads
(and here re-decodes) every batch already trained on to find its place in the data. Instead, each rank writes the
state of its data loader into the checkpoint (`dataset_state_rank{N}.json`): torchdata's `StatefulDataLoader`,
which accelerate uses with `use_stateful_dataloader`, asks the streamed `datasets.IterableDataset` (in the loader's
worker processes too) where it is, and accelerate takes that state before it reads ahead. The resumed run loads the
state and continues at the next record. Not part of a checkpoint's remote code.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers.trainer import TRAINER_STATE_NAME
from transformers.utils import logging

logger = logging.get_logger(__name__)

DATA_STATE_NAME = "dataset_state_rank{rank}.json"
LAST_CHECKPOINT = ("last", "true")
"""Values of `--resume_from_checkpoint` that mean the newest complete checkpoint in `--output_dir`."""
_CHECKPOINT_FOLDER = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from, or whose data position does not fit this run's data flags."""


def stateful_dataloader_available() -> bool:
    """Whether torchdata's `StatefulDataLoader` imports (the `train` extra installs it)."""
    try:
        from torchdata.stateful_dataloader import StatefulDataLoader  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class DataState:
    """Where one rank's data stood when a checkpoint was written.

    Attributes:
        dataloader: the state dict of the rank's data loader after exactly the batches trained on.
        epoch: the pass over the data it was in (the dataset's `set_epoch` value).
        skipped: the per-reason counts of the records this rank skipped up to then.
        settings: the data flags the state belongs to (`data_settings`).
    """

    dataloader: dict[str, Any]
    epoch: int
    skipped: dict[str, int]
    settings: dict[str, Any]


def data_settings(
    sources: list[list[str]],
    file_format: str,
    shuffle_buffer: int,
    seed: int,
    probabilities: list[float] | None,
    stopping_strategy: str,
    batch_size: int,
    num_workers: int,
    world_size: int,
    side_files: list[str] = (),
) -> dict[str, Any]:
    """What a data position is relative to: resuming with other values would continue in another stream."""
    return {
        "train_files": sources,
        "side_files": list(side_files),
        "file_format": file_format,
        "shuffle_buffer": shuffle_buffer,
        "seed": seed,
        "source_probabilities": probabilities,
        "source_stopping_strategy": stopping_strategy if probabilities else None,
        "per_device_train_batch_size": batch_size,
        "dataloader_num_workers": num_workers,
        "world_size": world_size,
    }


def write_data_state(folder: str | os.PathLike, rank: int, world_size: int, state: DataState) -> Path:
    """Write `state` as `folder/dataset_state_rank{rank}.json` (to a temporary name first, then renamed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DATA_STATE_NAME.format(rank=rank)
    content = {
        "rank": rank,
        "world_size": world_size,
        "epoch": state.epoch,
        "skipped": state.skipped,
        "settings": state.settings,
        "dataloader": state.dataloader,
    }
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(content), encoding="utf-8")
    os.replace(temporary, path)
    return path


def _checkpoint_is_complete(folder: Path) -> bool:
    """trainer_state.json (written last) parses, and every rank's data state is there if one is."""
    try:
        json.loads((folder / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
        first = folder / DATA_STATE_NAME.format(rank=0)
        if not first.is_file():
            return True
        world_size = json.loads(first.read_text(encoding="utf-8"))["world_size"]
    except (OSError, ValueError, KeyError):
        return False
    return all((folder / DATA_STATE_NAME.format(rank=rank)).is_file() for rank in range(world_size))


def last_complete_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The `checkpoint-N` folder of `output_dir` with the largest N that was written completely (a run killed while
    saving leaves an incomplete one, which is passed over with a warning)."""
    output = Path(output_dir)
    if not output.is_dir():
        return None
    folders = [path for path in output.iterdir() if path.is_dir() and _CHECKPOINT_FOLDER.match(path.name)]
    for folder in sorted(folders, key=lambda path: int(_CHECKPOINT_FOLDER.match(path.name).group(1)), reverse=True):
        if _checkpoint_is_complete(folder):
            return folder
        logger.warning(f"{folder}: an incomplete checkpoint (the run stopped while writing it); passing over it")
    return None


def resolve_checkpoint(value: str | None, output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint folder `--resume_from_checkpoint` names: a path, or `last` (also `true`) for the newest
    complete one in `output_dir`; None without the flag. CheckpointError when there is none or it is incomplete."""
    if not value:
        return None
    if value.lower() in LAST_CHECKPOINT:
        folder = last_complete_checkpoint(output_dir)
        if folder is None:
            raise CheckpointError(
                f"--resume_from_checkpoint {value}: {output_dir} holds no complete checkpoint-N folder"
            )
        return folder
    folder = Path(value)
    if not folder.is_dir():
        raise CheckpointError(f"--resume_from_checkpoint {value}: no such folder")
    if not _checkpoint_is_complete(folder):
        raise CheckpointError(
            f"--resume_from_checkpoint {value}: not a complete checkpoint ({TRAINER_STATE_NAME} or a rank's "
            f"{DATA_STATE_NAME.format(rank='N')} is missing or unreadable); resume from an earlier one"
        )
    return folder


def read_data_state(folder: Path, rank: int, world_size: int, settings: dict[str, Any]) -> DataState | None:
    """This rank's data state in checkpoint `folder`, or None when the checkpoint has none (written without
    torchdata, or by an older videotgb). CheckpointError when it was written for another world size or other data
    flags."""
    path = folder / DATA_STATE_NAME.format(rank=rank)
    if not path.is_file():
        return None
    content = json.loads(path.read_text(encoding="utf-8"))
    if content["world_size"] != world_size:
        raise CheckpointError(
            f"--resume_from_checkpoint {folder}: written by {content['world_size']} process(es), resumed with "
            f"{world_size}; resume with the same number of processes"
        )
    changed = [name for name in settings if content["settings"].get(name) != settings[name]]
    if changed:
        described = ", ".join(f"--{name} {content['settings'].get(name)!r} -> {settings[name]!r}" for name in changed)
        raise CheckpointError(
            f"--resume_from_checkpoint {folder}: the checkpoint's data position belongs to other data flags "
            f"({described}); resume with the same flags, or pass --ignore_data_skip to start the data over"
        )
    return DataState(content["dataloader"], content["epoch"], content["skipped"], content["settings"])


__all__ = [
    "DATA_STATE_NAME",
    "CheckpointError",
    "DataState",
    "data_settings",
    "last_complete_checkpoint",
    "read_data_state",
    "resolve_checkpoint",
    "stateful_dataloader_available",
    "write_data_state",
]
