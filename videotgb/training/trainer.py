"""`VideoTGBTrainer`: `transformers.Trainer` with a VideoTGB stage's loss, the skipped-record counts and loss terms in
the logs, checkpoints that hold each rank's place in the data stream, and LoRA results with the stage's other trained
weights. `videotgb-train` (`videotgb.train`) builds it. Not part of a checkpoint's remote code.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from ..modeling_videotgb import span_targets_to_positions
from .data import DECODE_SKIP_REASONS
from .metrics import grounding_iou
from .resume import DataState, stateful_dataloader_available, write_data_state
from .stages import grounding_loss

logger = logging.get_logger(__name__)

STAGE_WEIGHTS_NAME = "stage_weights.safetensors"  # beside a LoRA adapter: the stage's other trained weights
LORA_ADAPTER_FOLDER = "lora_adapter"


class VideoTGBTrainer(Trainer):
    """`Trainer` with the stage's loss, the skipped-record counts and loss terms in the logs, and checkpoints that
    hold each rank's place in the data stream (`videotgb.training.resume`).

    Args:
        stage: the `Stage` that decides the loss.
        pseudo_span_kwargs: for `self_refine`, what `pseudo_spans_from_model` gets.
        data_settings: the data flags the data positions in checkpoints belong to (`data_settings`); with None (or
            without torchdata) checkpoints hold none and a resumed run re-reads the batches trained on.
        resume_data: this rank's data position in the checkpoint being resumed: the data loader continues there
            (`TrainingArguments.ignore_data_skip` must be True, so that Trainer does not also skip batches).
    """

    def __init__(
        self,
        *args,
        stage,
        pseudo_span_kwargs: dict | None = None,
        data_settings: dict | None = None,
        resume_data: DataState | None = None,
        **kwargs,
    ):
        self.stateful_data = data_settings is not None and stateful_dataloader_available()
        super().__init__(*args, **kwargs)
        # `compute_loss` returns each micro-batch's mean loss and ignores `num_items_in_batch`: Trainer must average
        # over gradient-accumulation steps itself (it would sum them for a model whose forward takes `**kwargs`)
        self.model_accepts_loss_kwargs = False
        if resume_data is not None and not self.args.ignore_data_skip:
            raise ValueError("resume_data needs ignore_data_skip=True, or Trainer would skip the batches again")
        self.stage = stage
        self.pseudo_span_kwargs = pseudo_span_kwargs or {}
        self.data_settings = data_settings
        self.resume_data = resume_data
        self.rng_checkpoint: str | None = None  # resuming: restore the random state from here after the first fetch
        self.record_ids: list[str] = []  # the records this rank trained on in this run, in order
        self.trainable_names = {name for name, parameter in self.model.named_parameters() if parameter.requires_grad}
        self.skipped: Counter[str] = Counter(resume_data.skipped if resume_data else {})
        self.terms: dict[str, list[float]] = {"lm_loss": [], "span_loss": [], "grounding_iou": []}
        self.frames_since_log = 0
        self.last_log_time = time.perf_counter()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.skipped.update(inputs.pop("skipped", {}))
        if "frame_mask" in inputs:
            self.frames_since_log += int(inputs["frame_mask"].sum())
        self.record_ids.extend(inputs.pop("record_ids", []))
        span_targets = inputs.pop("span_targets", None)
        pseudo_span_inputs = inputs.pop("pseudo_span_inputs", None)
        if self.stage.span_loss is None:
            span_targets = None
        elif self.stage.span_loss == "online":
            span_targets = self.online_span_targets(model, pseudo_span_inputs, inputs["input_ids"].device)
        if not self.stage.lm_loss:
            if "flow" not in inputs:
                raise ValueError(
                    "the grounding stage trains on videos with span_targets, but this batch has no video (a data "
                    "stream for it must skip other records: `stream_examples(..., span_only=True)`)"
                )
            loss, ious = grounding_loss(
                model,
                inputs["flow"],
                inputs["flow_mask"],
                inputs["bridge_input_ids"],
                inputs["bridge_attention_mask"],
                span_targets,
            )
            self.terms["span_loss"].append(loss.detach().item())
            self.terms["grounding_iou"].extend(ious.tolist())
            return (loss, {"loss": loss}) if return_outputs else loss
        # every module runs in every step (on placeholders when the batch has no frame or no flow), so that all ranks
        # gather and reduce the same parameters under ZeRO-3 / ZeRO-2 / DDP, and a text-only batch has a gradient
        outputs = model(**inputs, span_targets=span_targets, synced_gpus=True)
        for name in ("lm_loss", "span_loss"):
            if outputs.get(name) is not None:
                self.terms[name].append(outputs[name].detach().item())
        if span_targets is not None and outputs.start_logits is not None:
            flow_lengths = inputs["flow_mask"].sum(-1)
            positions = span_targets_to_positions(span_targets, flow_lengths).to(outputs.start_logits.device)
            ious = grounding_iou(outputs.start_logits.detach(), outputs.end_logits.detach(), positions)
            self.terms["grounding_iou"].extend(ious.tolist())
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def online_span_targets(self, model, pseudo_span_inputs: dict, device: torch.device) -> torch.Tensor:
        """Pseudo spans of the batch's videos made with the model as it is now (NaN rows for images and text).

        Called in every step, also for a batch without video: under ZeRO-3 the ranks make their `generate` calls
        together (`answer_frames`), and one without video takes part with placeholder calls."""
        from ..pseudo_spans import pseudo_spans_from_model

        clips = pseudo_span_inputs["clips"]
        rows = [row for row, clip in enumerate(clips) if clip is not None]
        targets = torch.full((len(clips), 2), float("nan"), device=device)
        spans = pseudo_spans_from_model(
            self.accelerator.unwrap_model(model),
            self.processing_class,
            [clips[row] for row in rows],
            [pseudo_span_inputs["questions"][row] for row in rows],
            [pseudo_span_inputs["answers"][row] for row in rows],
            **self.pseudo_span_kwargs,
        )
        if rows:
            targets[rows] = torch.tensor(spans, dtype=targets.dtype, device=device)
        return targets

    # ---- each rank's place in the data stream, saved with a checkpoint and restored from it ----

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if self.stateful_data:  # transformers' AcceleratorConfig does not pass this accelerate setting on
            self.accelerator.dataloader_config.use_stateful_dataloader = True

    def get_train_dataloader(self):
        """The prepared data loader; resuming, it continues after the checkpoint's last batch."""
        loader = super().get_train_dataloader()
        if self.resume_data is not None:
            loader.load_state_dict(self.resume_data.dataloader)
        return loader

    def _init_training_state(self, *args, **kwargs) -> tuple[int, int]:
        epochs_trained, steps_trained_in_current_epoch = super()._init_training_state(*args, **kwargs)
        if self.resume_data is not None:
            # Trainer counts epochs of max_steps batches for a stream without length; the stream's own pass count
            # decides its order (datasets reshuffles the shards per epoch) and the saved state is for that pass
            epochs_trained = self.resume_data.epoch
        return epochs_trained, steps_trained_in_current_epoch

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if self.resume_data is None:
            super()._load_rng_state(checkpoint)
        else:  # restored in get_batch_samples
            self.rng_checkpoint = checkpoint

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device) -> tuple[list, Any]:
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.rng_checkpoint is not None:
            # as Trainer does after skipping batches: starting the data loader's iterator draws a seed from the
            # random generators, which the uninterrupted run did long before the checkpoint
            super()._load_rng_state(self.rng_checkpoint)
            self.rng_checkpoint = None
        return batch_samples, num_items_in_batch

    def _save_checkpoint(self, model, trial) -> None:
        if self.stateful_data:  # before Trainer's files, so that its trainer_state.json stays the last one written
            loader = self.callback_handler.train_dataloader
            folder = Path(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            state = DataState(loader.state_dict(), loader.dataset.epoch, dict(self.skipped), self.data_settings)
            write_data_state(folder, self.args.process_index, self.args.world_size, state)
        super()._save_checkpoint(model, trial)

    # ---- LoRA stage: an adapter checkpoint saves only LoRA weights; keep the stage's other trained weights too ----

    def _stage_weights(self) -> dict[str, torch.Tensor]:
        """The trained parameters outside the LoRA adapter (Q-Former, query tokens, projection), by name in the
        VideoTGB model."""
        base = self.accelerator.unwrap_model(self.model).get_base_model()
        return {
            name: parameter.detach().contiguous().cpu()
            for name, parameter in base.named_parameters()
            if parameter.requires_grad and "lora_" not in name
        }

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict)
        if self.stage.lora:
            from safetensors.torch import save_file

            save_file(self._stage_weights(), str(Path(output_dir or self.args.output_dir) / STAGE_WEIGHTS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        # peft's adapter loading marks only the adapter trainable: give the stage back what it trains
        for name, parameter in self.model.named_parameters():
            parameter.requires_grad_(name in self.trainable_names)
        stage_weights = Path(resume_from_checkpoint) / STAGE_WEIGHTS_NAME
        if self.stage.lora and stage_weights.is_file():
            from safetensors.torch import load_file

            base = self.accelerator.unwrap_model(model or self.model).get_base_model()
            missing = set(load_file(stage_weights)) - set(dict(base.named_parameters()))
            if missing:
                raise ValueError(f"{stage_weights} names weights this model lacks, e.g. {sorted(missing)[:3]}")
            base.load_state_dict(load_file(stage_weights), strict=False)

    def save_lora_results(self, output_dir: str | Path) -> None:
        """Write the adapter (+ the stage's other trained weights) to `output_dir/lora_adapter` and the merged
        model, a plain VideoTGB checkpoint, to `output_dir`."""
        output = Path(output_dir)
        self._save(str(output / LORA_ADAPTER_FOLDER))
        merged = self.accelerator.unwrap_model(self.model).merge_and_unload()
        merged.save_pretrained(output)

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" in logs:
            now = time.perf_counter()
            logs["frames_per_second"] = self.frames_since_log / max(now - self.last_log_time, 1e-9)
            self.frames_since_log, self.last_log_time = 0, now
        for name, values in self.terms.items():
            if values and "loss" in logs:
                logs[name] = sum(values) / len(values)
                values.clear()
        logs.update(self.skipped_totals())
        super().log(logs, start_time)

    def skipped_totals(self) -> dict[str, int]:
        """`skipped_<reason>`: the records skipped so far, summed over the ranks (every rank must call this)."""
        counts = torch.tensor([self.skipped[reason] for reason in DECODE_SKIP_REASONS], device=self.args.device)
        totals = self.accelerator.reduce(counts, reduction="sum") if self.accelerator.num_processes > 1 else counts
        return {
            f"skipped_{reason}": int(total) for reason, total in zip(DECODE_SKIP_REASONS, totals.tolist(), strict=True)
        }


__all__ = ["LORA_ADAPTER_FOLDER", "STAGE_WEIGHTS_NAME", "VideoTGBTrainer"]
