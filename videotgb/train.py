"""`videotgb-train`: train a VideoTGB stage with `transformers.Trainer` on streamed shards.

    videotgb-train --stage instruct --model CHECKPOINT --train_files 'shards/*.parquet' --output_dir out --max_steps 1000
    torchrun --nproc_per_node 8 -m videotgb.train --stage instruct --deepspeed zero2 ...
    deepspeed --module videotgb.train --stage instruct --deepspeed zero3 ...

Arguments are those of `ModelArguments`, `DataArguments` and `transformers.TrainingArguments` (`--help` lists all).
The stage decides what trains (`videotgb.training.stages`). Defaults follow the paper: AdamW with betas
(0.9, 0.98) and eps 1e-8, learning rate 5e-5, cosine schedule with 5 % warm-up stepped per optimiser step.
Not part of a checkpoint's remote code.
"""

from __future__ import annotations

import glob
import os
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser, TrainingArguments, set_seed
from transformers.utils import logging

from .data.precompute import check_side_settings
from .training.data import STOPPING_STRATEGIES, VideoTGBCollator, stream_examples
from .training.deepspeed import resolve_deepspeed_config
from .training.resume import (
    DataState,
    data_settings,
    read_data_state,
    resolve_checkpoint,
)
from .training.stages import STAGES, LoraSettings, apply_stage, get_stage, with_extra_modules
from .training.trainer import VideoTGBTrainer

logger = logging.get_logger(__name__)

PAPER_DEFAULTS = {
    "learning_rate": 5e-5,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "adam_beta1": 0.9,
    "adam_beta2": 0.98,
    "adam_epsilon": 1e-8,
    "remove_unused_columns": False,  # the collator builds the model's inputs from decoded examples
    "report_to": "none",
    # each rank reads its own shards (datasets splits them by rank); batches are never sent from rank 0, since they
    # carry skip counts and, for self-refinement, the decoded clips
    "accelerator_config": {"dispatch_batches": False, "use_configured_state": True},
}


@dataclass
class ModelArguments:
    stage: str = field(metadata={"help": f"training stage: {', '.join(STAGES)}"})
    model: str | None = field(default=None, metadata={"help": "VideoTGB checkpoint folder or Hub id to train"})
    vlm: str | None = field(
        default=None, metadata={"help": "start from this BLIP-2 / InstructBLIP folder or Hub id (with --bert)"}
    )
    bert: str | None = field(default=None, metadata={"help": "BERT folder or Hub id for the bridge (with --vlm)"})
    lora_r: int | None = field(default=None, metadata={"help": "LoRA rank (instruct_lora; default 8)"})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA alpha (instruct_lora; default 32)"})
    lora_dropout: float | None = field(default=None, metadata={"help": "LoRA dropout (instruct_lora; default 0.1)"})
    lora_target_modules: str | None = field(
        default=None, metadata={"help": "regex of the LM modules that get LoRA (default: query and value projections)"}
    )
    pseudo_span_max_new_tokens: int = field(
        default=128, metadata={"help": "self_refine: most tokens of each per-frame answer that scores a frame"}
    )
    pseudo_span_batch_size: int = field(
        default=32,
        metadata={"help": "self_refine: candidate frames answered per generate call while making pseudo spans"},
    )
    pseudo_span_subtract_min: bool = field(
        default=False, metadata={"help": "self_refine: subtract the lowest frame score before the largest rectangle"}
    )
    also_train: list[str] = field(
        default_factory=list,
        metadata={
            "help": "train these top-level modules too, in full, besides the stage's (e.g. vision_model "
            "language_model: full fine-tuning of a small model, as the synthetic recipe does)"
        },
    )
    overwrite: bool = field(default=False, metadata={"help": "train into an --output_dir that already holds files"})


@dataclass
class DataArguments:
    train_files: list[str] = field(
        default_factory=list,
        metadata={
            "help": "shard folders of `videotgb data build`, or shard files / globs (local paths, fsspec URLs); "
            "with --source_probabilities each one is a source"
        },
    )
    file_format: str = field(default="parquet", metadata={"help": "parquet or webdataset (of files given directly)"})
    side_files: list[str] = field(
        default_factory=list,
        metadata={
            "help": "side folders of `videotgb data flow` / `videotgb data pseudo-spans` made from the one build "
            "in --train_files: their precomputed flow / span_targets are joined to its records by id"
        },
    )
    shuffle_buffer: int = field(
        default=0,
        metadata={
            "help": "records in a shuffle buffer that also shuffles the shard order; 0 (default): the order of the "
            "build (shuffle it with `videotgb data build --seed`), and a resumed run decodes no record twice"
        },
    )
    source_probabilities: list[float] | None = field(
        default=None,
        metadata={"help": "mix the --train_files sources: the next record comes from each with these probabilities"},
    )
    source_stopping_strategy: str = field(
        default="first_exhausted",
        metadata={
            "help": f"with --source_probabilities, when a pass over the data ends: {', '.join(STOPPING_STRATEGIES)}"
        },
    )


class TrainingSetupError(ValueError):
    """A flag or input that makes training impossible, found before any work starts."""


def expand_sources(patterns: list[str], file_format: str) -> tuple[list[list[str]], str]:
    """The shard files of each `--train_files` item and their format: shard folders of `videotgb data build` (their
    manifest lists the files and the format), local globs (sorted) or URLs. TrainingSetupError when nothing is
    given, a local pattern matches no file, the formats differ; SchemaVersionError when a folder's manifest or the
    first file of a pattern records another record schema version."""
    from .data.shards import MANIFEST_NAME, check_schema_version, shard_files, shard_schema_version

    if not patterns:
        raise TrainingSetupError("--train_files: no shard files given")
    sources, formats = [], set()
    for pattern in patterns:
        if Path(pattern, MANIFEST_NAME).is_file():
            files, folder_format = shard_files(pattern)
            formats.add(folder_format)
        else:
            files = [pattern] if "://" in pattern else sorted(glob.glob(pattern))
            if not files:
                raise TrainingSetupError(f"--train_files {pattern}: no shard files match")
            formats.add(file_format)
            try:
                version = shard_schema_version(files[0], file_format)
            except (OSError, ValueError, tarfile.TarError) as error:
                raise TrainingSetupError(
                    f"--train_files {pattern}: {files[0]} is not a readable {file_format} shard ({error})"
                ) from None
            check_schema_version(files[0], version)
        sources.append(files)
    if len(formats) > 1:
        raise TrainingSetupError(f"--train_files mixes shard formats {sorted(formats)}; train on one format")
    return sources, formats.pop()


def check_sources(
    patterns: list[str], sources: list[list[str]], data_args: DataArguments, world_size: int
) -> list[float] | None:
    """Check the mixing flags against the sources and the shard counts against the world size; return the source
    probabilities scaled to sum to exactly 1 (None without --source_probabilities)."""
    probabilities = data_args.source_probabilities
    if probabilities is not None:
        if len(probabilities) != len(sources):
            raise TrainingSetupError(
                f"--source_probabilities: {len(probabilities)} value(s) for {len(sources)} --train_files source(s); "
                "give one per source, in the same order"
            )
        if any(not probability > 0 for probability in probabilities):
            raise TrainingSetupError(f"--source_probabilities {probabilities}: every probability must be positive")
        if abs(sum(probabilities) - 1) > 1e-3:
            raise TrainingSetupError(f"--source_probabilities {probabilities}: sum to {sum(probabilities):g}, not 1")
        if data_args.source_stopping_strategy not in STOPPING_STRATEGIES:
            raise TrainingSetupError(
                f"--source_stopping_strategy {data_args.source_stopping_strategy}: must be one of "
                f"{', '.join(STOPPING_STRATEGIES)}"
            )
        probabilities = [probability / sum(probabilities) for probability in probabilities]
    # each rank reads its own shards of each source: uneven shares would end the ranks' streams at different times
    groups = zip(patterns, sources, strict=True) if probabilities else [(" ".join(patterns), sum(sources, []))]
    for pattern, files in groups:
        if len(files) % world_size:
            raise TrainingSetupError(
                f"--train_files {pattern}: {len(files)} shard file(s), not a multiple of the {world_size} processes; "
                f"each process reads its own shards (build with `videotgb data build --world-size {world_size}`)"
            )
    return probabilities


def open_side_files(arguments: DataArguments) -> list:
    """The `--side_files` folders, checked against the build in `--train_files` (which must be that one folder)."""
    from .data.precompute import open_side_folders
    from .data.shards import MANIFEST_NAME

    if not arguments.side_files:
        return []
    if len(arguments.train_files) != 1 or not Path(arguments.train_files[0], MANIFEST_NAME).is_file():
        raise TrainingSetupError(
            "--side_files needs --train_files to be the one folder of `videotgb data build` they were made from, "
            f"got {arguments.train_files}"
        )
    return open_side_folders(arguments.train_files[0], arguments.side_files)


def lora_settings(arguments: ModelArguments) -> LoraSettings | None:
    given = {
        name: getattr(arguments, f"lora_{name}")
        for name in ("r", "alpha", "dropout", "target_modules")
        if getattr(arguments, f"lora_{name}") is not None
    }
    if given and arguments.stage != "instruct_lora":
        flags = ", ".join(f"--lora_{name}" for name in given)
        raise TrainingSetupError(f"{flags} given, but --stage {arguments.stage} trains no LoRA (use instruct_lora)")
    return LoraSettings(**given) if given else None


def check_pseudo_span_flags(arguments: ModelArguments) -> None:
    for flag in ("pseudo_span_max_new_tokens", "pseudo_span_batch_size"):
        if getattr(arguments, flag) < 1:
            raise TrainingSetupError(f"--{flag} must be a positive integer, got {getattr(arguments, flag)}")


def check_output_dir(training_args: TrainingArguments, arguments: ModelArguments) -> None:
    output = Path(training_args.output_dir)
    if output.is_dir() and any(output.iterdir()) and not (arguments.overwrite or training_args.resume_from_checkpoint):
        raise TrainingSetupError(
            f"--output_dir {output} already holds files; pass --resume_from_checkpoint to continue, or --overwrite"
        )


def data_position(
    checkpoint: Path | None, training_args: TrainingArguments, settings: dict | None
) -> DataState | None:
    """This rank's place in the data stream in `checkpoint`, to continue from without reading the batches trained on
    (then `ignore_data_skip` is set, so that Trainer does not skip them as well). None when there is no checkpoint,
    when `--ignore_data_skip` starts the data over, or, with a warning, when Trainer must re-read the batches: with a
    shuffle buffer (`settings` None), or a checkpoint that holds no data position."""
    if checkpoint is None or training_args.ignore_data_skip:
        return None
    if settings is None:
        logger.warning(
            "--shuffle_buffer is not 0: the records in the shuffle buffer are not saved with a checkpoint, so the "
            "resumed run reads and decodes the batches already trained on again to continue exactly; train with "
            "--shuffle_buffer 0 (on shards built with --seed) to resume without that"
        )
        return None
    state = read_data_state(checkpoint, training_args.process_index, training_args.world_size, settings)
    if state is None:
        logger.warning(
            f"{checkpoint} holds no data position (written without torchdata installed, or by an older videotgb): "
            "the resumed run reads and decodes the batches already trained on again to continue exactly"
        )
        return None
    training_args.ignore_data_skip = True
    return state


def load_model_and_processor(arguments: ModelArguments, dtype: torch.dtype):
    from .modeling_videotgb import VideoTGBForConditionalGeneration
    from .processing_videotgb import VideoTGBProcessor

    if arguments.model and (arguments.vlm or arguments.bert):
        raise TrainingSetupError("give either --model or --vlm with --bert, not both")
    if arguments.model:
        model = VideoTGBForConditionalGeneration.from_pretrained(arguments.model, dtype=dtype)
        return model, VideoTGBProcessor.from_pretrained(arguments.model)
    if not (arguments.vlm and arguments.bert):
        missing = "--bert" if arguments.vlm else "--vlm" if arguments.bert else "--model (or --vlm with --bert)"
        raise TrainingSetupError(f"{missing} is required")
    from .init_checkpoint import build_from_blip_and_bert

    return build_from_blip_and_bert(
        arguments.vlm, arguments.bert, bridge_overrides={"flow_estimator": "dis"}, dtype=dtype
    )


def build_parser() -> HfArgumentParser:
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments), description=__doc__)
    parser.set_defaults(**PAPER_DEFAULTS)
    return parser


def _resolve_deepspeed_flag(argv: list[str]) -> list[str]:
    """`--deepspeed NAME` becomes the shipped file's path before TrainingArguments reads it."""
    argv = list(argv)
    for index, value in enumerate(argv):
        if value == "--deepspeed" and index + 1 < len(argv):
            argv[index + 1] = resolve_deepspeed_config(argv[index + 1])
        elif value.startswith("--deepspeed="):
            argv[index] = "--deepspeed=" + resolve_deepspeed_config(value.split("=", 1)[1])
    return argv


def _prepare_process_state(argv: list[str]) -> None:
    """Create accelerate's process state before TrainingArguments (which then uses it, `use_configured_state`).

    Several CPU processes (torchrun or the deepspeed launcher without GPUs) need the gloo backend, or each rank
    would believe it trains alone: with `--deepspeed` the state must be DeepSpeed's, and plain DDP needs a CPU
    state (`cpu=True`, what `--use_cpu` would ask for), which it gets whether `--use_cpu` is given or not.
    """
    from accelerate import PartialState

    deepspeed = "--deepspeed" in argv or any(value.startswith("--deepspeed=") for value in argv)
    if deepspeed:
        os.environ.setdefault("ACCELERATE_USE_DEEPSPEED", "true")
        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
    several_cpu_processes = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    PartialState(**({"backend": "gloo", "cpu": not deepspeed} if several_cpu_processes else {}))


def _check_world_size(training_args: TrainingArguments) -> None:
    """TrainingSetupError when the launcher started several processes but Trainer would let each train alone."""
    from transformers.training_args import ParallelMode

    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training_args.parallel_mode != ParallelMode.DISTRIBUTED:
        raise TrainingSetupError(
            f"{launched} processes were launched, but Trainer would let each train alone on its own shards "
            f"(parallel mode {training_args.parallel_mode.value}); check the launcher and the device flags"
        )


def train(argv: list[str] | None = None) -> Path:
    """Parse the arguments, check them, train, and save model + processor into `--output_dir`; return it."""
    argv = _resolve_deepspeed_flag(sys.argv[1:] if argv is None else argv)
    _prepare_process_state(argv)
    model_args, data_args, training_args = build_parser().parse_args_into_dataclasses(argv)
    _check_world_size(training_args)
    stage_name = model_args.stage
    lora = lora_settings(model_args)
    check_pseudo_span_flags(model_args)
    sources, file_format = expand_sources(data_args.train_files, data_args.file_format)
    probabilities = check_sources(data_args.train_files, sources, data_args, training_args.world_size)
    side_folders = open_side_files(data_args)
    if training_args.max_steps is None or training_args.max_steps <= 0:
        raise TrainingSetupError("--max_steps is required: streamed shards have no length")
    check_output_dir(training_args, model_args)
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    settings = None
    if data_args.shuffle_buffer == 0:  # a shuffle buffer's records cannot be part of a checkpoint
        settings = data_settings(
            sources,
            file_format,
            data_args.shuffle_buffer,
            training_args.seed,
            probabilities,
            data_args.source_stopping_strategy,
            training_args.per_device_train_batch_size,
            training_args.dataloader_num_workers,
            training_args.world_size,
            data_args.side_files,
        )
    resume_data = data_position(checkpoint, training_args, settings)

    dtype = torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else torch.float32
    set_seed(training_args.seed)  # newly initialised weights (bridge parts, LoRA) follow --seed, as training does
    model, processor = load_model_and_processor(model_args, dtype)
    stage = get_stage(stage_name, seq2seq=not model.config.use_decoder_only_language_model)
    stage = with_extra_modules(stage, model, model_args.also_train)
    processor.check_model_config(model.config)
    check_side_settings(side_folders, processor)
    trained = apply_stage(model, stage, lora)
    dataset = stream_examples(
        sources,
        processor,
        data_args.shuffle_buffer,
        training_args.seed,
        file_format,
        probabilities,
        data_args.source_stopping_strategy,
        side_folders=side_folders,
        # the grounding stage reads flow and questions only, and trains on videos with span targets only
        decode_frames=stage.lm_loss,
        span_only=not stage.lm_loss,
    )
    trainer = VideoTGBTrainer(
        model=trained,
        args=training_args,
        train_dataset=dataset,
        data_collator=VideoTGBCollator(processor, keep_clips=stage.span_loss == "online"),
        processing_class=processor,
        stage=stage,
        pseudo_span_kwargs={
            "max_new_tokens": model_args.pseudo_span_max_new_tokens,
            "batch_size": model_args.pseudo_span_batch_size,
            "subtract_min": model_args.pseudo_span_subtract_min,
        },
        data_settings=settings,
        resume_data=resume_data,
    )
    result = trainer.train(resume_from_checkpoint=None if checkpoint is None else str(checkpoint))
    metrics = result.metrics | trainer.skipped_totals()
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)  # train_results.json and all_results.json, as transformers' examples
    if stage.lora:
        trainer.save_lora_results(training_args.output_dir)
    else:
        trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json: the logged losses and skipped-record counts
    processor.save_pretrained(training_args.output_dir)
    return Path(training_args.output_dir)


def main(argv: list[str] | None = None) -> int:
    from .optical_flow import FlowDependencyError

    try:
        train(argv)
    except (ValueError, OSError, FlowDependencyError) as error:  # our checks: flags, files, configs, dependencies
        print(f"videotgb-train: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
