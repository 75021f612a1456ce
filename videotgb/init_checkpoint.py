"""Start a VideoTGB from a BLIP-2 / InstructBLIP checkpoint and a BERT checkpoint: model and matching processor,
written into one folder that `videotgb answer`, `from_pretrained` and training can use directly.

    videotgb init --vlm Salesforce/instructblip-vicuna-7b --bert bert-base-uncased --output videotgb-7b-init

Not part of a checkpoint's remote code.
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers.utils import logging

logger = logging.get_logger(__name__)


def check_output_folder(output_dir: str | os.PathLike, overwrite: bool) -> Path:
    """`output_dir` as a Path; raise FileExistsError when it already holds files and `overwrite` is not set."""
    output = Path(output_dir)
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"{output} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{output} already holds files; choose an empty folder or pass overwrite=True (--overwrite)"
        )
    return output


def build_from_blip_and_bert(
    vlm_name_or_path: str,
    bert_name_or_path: str,
    bridge_overrides: dict | None = None,
    hub_kwargs: dict | None = None,
    processor_kwargs: dict | None = None,
    **config_and_loading_kwargs,
):
    """Model (`VideoTGBForConditionalGeneration.from_blip_and_bert`) and its processor
    (`VideoTGBProcessor.from_blip_and_bert`) from the same two sources, checked against each other; nothing saved."""
    from .modeling_videotgb import VideoTGBForConditionalGeneration
    from .processing_videotgb import VideoTGBProcessor

    model = VideoTGBForConditionalGeneration.from_blip_and_bert(
        vlm_name_or_path,
        bert_name_or_path,
        bridge_overrides=bridge_overrides,
        hub_kwargs=hub_kwargs,
        **config_and_loading_kwargs,
    )
    processor = VideoTGBProcessor.from_blip_and_bert(
        vlm_name_or_path, bert_name_or_path, model.config, hub_kwargs=hub_kwargs, **(processor_kwargs or {})
    )
    processor.check_model_config(model.config)
    processor.check_chat_template()
    return model, processor


def init_from_blip_and_bert(
    vlm_name_or_path: str,
    bert_name_or_path: str,
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    bridge_overrides: dict | None = None,
    hub_kwargs: dict | None = None,
    processor_kwargs: dict | None = None,
    **config_and_loading_kwargs,
):
    r"""
    Build a VideoTGB from BLIP-2 / InstructBLIP and BERT and save model + processor into `output_dir`.

    Model and processor come from `build_from_blip_and_bert` (same arguments), so that the folder answers questions at once
    (with an untrained bridge and new query-text alignment: train it before trusting the keyframes).

    Args:
        vlm_name_or_path: BLIP-2 / InstructBLIP folder or Hub id, with its processor files.
        bert_name_or_path: BERT folder or Hub id, with safetensors weights and tokenizer files.
        output_dir: folder to write; it must be empty or absent unless `overwrite`.
        overwrite: write into a folder that already holds files.
        bridge_overrides, hub_kwargs, config_and_loading_kwargs: as in `from_blip_and_bert`.
        processor_kwargs: other `VideoTGBProcessor` arguments (`max_flow_steps`, `flow_config`, ...).

    Returns:
        The model and the processor, as saved.
    """
    output = check_output_folder(output_dir, overwrite)
    model, processor = build_from_blip_and_bert(
        vlm_name_or_path,
        bert_name_or_path,
        bridge_overrides=bridge_overrides,
        hub_kwargs=hub_kwargs,
        processor_kwargs=processor_kwargs,
        **config_and_loading_kwargs,
    )
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    logger.info("wrote a VideoTGB model and processor to %s", output)
    return model, processor


__all__ = ["build_from_blip_and_bert", "check_output_folder", "init_from_blip_and_bert"]
