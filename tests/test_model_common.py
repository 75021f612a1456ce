"""Checks written the way transformers' common model tests (`tests/test_modeling_common.py`) write them: dtype,
half precision, accelerate offload, attention implementations, `inputs_embeds`, output flags from the config,
`main_input_name`, and what `from_pretrained` / `from_blip_and_bert` accept and report."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import randomize_, tiny_model, video_batch

from videotgb import VideoTGBForConditionalGeneration

OUR_LOGGER = logging.getLogger("videotgb.modeling_videotgb")
T5_LABELS = torch.tensor([[40, 41, 42, 1], [43, 1, -100, -100]])


def model_inputs(config, language_model: str) -> dict:
    """A right-padded batch for `forward`; for T5 the labels are decoder targets."""
    batch = video_batch(config)
    if language_model == "t5":
        batch["labels"] = T5_LABELS
    if not config.qformer_text_input:
        del batch["qformer_input_ids"], batch["qformer_attention_mask"]
    return batch


def generate_inputs(batch: dict) -> dict:
    """The batch without labels and left-padded, as for batched generation."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    order = torch.argsort(mask, dim=1, stable=True)
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    return inputs | {"input_ids": ids.gather(1, order), "attention_mask": mask.gather(1, order)}


def save_tiny(tmp_path, language_model: str = "llama", **overrides):
    model = randomize_(tiny_model(language_model, **overrides), std=0.1)
    folder = tmp_path / f"videotgb-{language_model}"
    model.save_pretrained(folder)
    return model, folder


def cast_floats(batch: dict, dtype: torch.dtype) -> dict:
    return {key: value.to(dtype) if value.is_floating_point() else value for key, value in batch.items()}


# ---- dtype ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("language_model", ["llama", "t5"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_model_dtype_is_the_dtype_of_its_weights(tmp_path, language_model, dtype):
    _, folder = save_tiny(tmp_path, language_model)
    loaded = VideoTGBForConditionalGeneration.from_pretrained(folder, dtype=dtype)
    assert loaded.query_tokens.dtype == torch.float32  # kept in fp32 on purpose
    assert loaded.dtype == dtype
    assert loaded.bridge.dtype == dtype
    assert loaded.language_projection.weight.dtype == dtype


@pytest.mark.parametrize("qformer_text_input", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_t5_forward_and_generate(tmp_path, qformer_text_input, dtype):
    # T5 keeps `wo` in fp32 in fp16 models, a pattern that also matches every `word_embeddings`
    _, folder = save_tiny(tmp_path, "t5", qformer_text_input=qformer_text_input)
    loaded = VideoTGBForConditionalGeneration.from_pretrained(folder, dtype=dtype).eval()
    batch = cast_floats(model_inputs(loaded.config, "t5"), dtype)
    with torch.no_grad():
        out = loaded(**batch)
        generated = loaded.generate(**generate_inputs(batch), max_new_tokens=3, do_sample=False)
    assert out.logits.dtype == dtype
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    assert generated.shape[0] == 2
