"""The four training stages train exactly their modules (and LoRA only on the language model); the shipped DeepSpeed
configurations resolve by name and bad ones are refused by name."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_model, video_batch

from videotgb.training import (
    NAMED_CONFIGS,
    LoraSettings,
    apply_stage,
    get_stage,
    grounding_loss,
    resolve_deepspeed_config,
    trainable_parameter_names,
    with_extra_modules,
)

EXPECTED_TRAINABLE = {
    ("grounding", "llama"): {"bridge"},
    ("grounding", "t5"): {"bridge"},
    ("self_refine", "llama"): {"bridge", "qformer", "query_tokens", "language_projection"},
    ("self_refine", "t5"): {"bridge", "qformer", "query_tokens", "language_projection", "language_model"},
    ("instruct", "llama"): {"qformer", "query_tokens", "language_projection"},
    ("instruct", "t5"): {"qformer", "query_tokens", "language_projection"},
}


SPAN_TARGETS = torch.tensor([[0.1, 0.4], [0.5, 0.9]])


def stage_loss(model, stage, batch):
    """The loss the stage optimises, on one batch (span targets for the stages with a span loss)."""
    if not stage.lm_loss:
        keys = ("flow", "flow_mask", "bridge_input_ids", "bridge_attention_mask")
        return grounding_loss(model, *(batch[key] for key in keys), SPAN_TARGETS)[0]
    span_targets = SPAN_TARGETS if stage.span_loss is not None else None
    return model(**batch, span_targets=span_targets).loss


@pytest.mark.parametrize(("stage_name", "language_model"), sorted(EXPECTED_TRAINABLE))
def test_each_stage_trains_its_modules_and_leaves_the_rest_bit_identical(stage_name, language_model):
    model = tiny_model(language_model).train()
    stage = get_stage(stage_name, seq2seq=language_model == "t5")
    apply_stage(model, stage)
    trainable = trainable_parameter_names(model)
    assert {name.split(".")[0] for name in trainable} == EXPECTED_TRAINABLE[(stage_name, language_model)]
    assert not any("rotary" in name or name.startswith("vision_model.") for name in trainable)

    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    batch = video_batch(model.config)
    if language_model == "t5":
        batch["labels"] = batch["input_ids"][:, 1:4].contiguous()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    stage_loss(model, stage, batch).backward()
    optimizer.step()
    changed = {name for name, parameter in model.named_parameters() if not torch.equal(parameter, before[name])}
    assert changed <= set(trainable)
    assert {name.split(".")[0] for name in changed} == EXPECTED_TRAINABLE[(stage_name, language_model)]


def test_also_train_adds_whole_modules_and_they_train():
    model = tiny_model("llama").train()
    stage = with_extra_modules(get_stage("instruct", seq2seq=False), model, ["vision_model", "language_model"])
    apply_stage(model, stage)
    expected = EXPECTED_TRAINABLE[("instruct", "llama")] | {"vision_model", "language_model"}
    assert {name.split(".")[0] for name in trainable_parameter_names(model)} == expected
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    stage_loss(model, stage, video_batch(model.config)).backward()
    optimizer.step()
    changed = {name.split(".")[0] for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == expected


@pytest.mark.parametrize(("language_model", "target"), [("llama", "q_proj"), ("t5", "q")])
def test_instruct_lora_adds_lora_to_the_language_model_only(language_model, target):
    model = tiny_model(language_model)
    wrapped = apply_stage(model, get_stage("instruct_lora", seq2seq=language_model == "t5"))
    trainable = trainable_parameter_names(wrapped)
    lora = [name for name in trainable if "lora_" in name]
    assert lora and all(".language_model." in name for name in lora)
    assert any(f".{target}.lora_A" in name for name in lora)
    others = {name.split("base_model.model.", 1)[1].split(".")[0] for name in trainable if "lora_" not in name}
    assert others == {"qformer", "query_tokens", "language_projection"}
    adapter = wrapped.peft_config["default"]
    assert (adapter.r, adapter.lora_alpha, adapter.lora_dropout) == (8, 32, 0.1)


def test_lora_settings_are_passed_on():
    model = tiny_model("llama")
    wrapped = apply_stage(model, get_stage("instruct_lora", seq2seq=False), LoraSettings(r=4, alpha=8, dropout=0.0))
    adapter = wrapped.peft_config["default"]
    assert (adapter.r, adapter.lora_alpha, adapter.lora_dropout) == (4, 8, 0.0)


class TestBadStageArguments:
    def test_unknown_stage(self):
        with pytest.raises(ValueError, match="--stage must be one of grounding, self_refine, instruct, instruct_lora"):
            get_stage("pretrain", seq2seq=False)

    def test_lora_settings_on_a_stage_without_lora(self):
        with pytest.raises(ValueError, match="stage 'instruct' trains no LoRA"):
            apply_stage(tiny_model("llama"), get_stage("instruct", seq2seq=False), LoraSettings())

    def test_also_train_names_a_part_the_model_lacks(self):
        with pytest.raises(ValueError, match=r"--also_train vision_tower: not a part of this model; the parts are "):
            with_extra_modules(get_stage("instruct", seq2seq=False), tiny_model("llama"), ["vision_tower"])

    def test_also_train_with_lora(self):
        with pytest.raises(ValueError, match="--also_train cannot be combined with --stage instruct_lora"):
            with_extra_modules(get_stage("instruct_lora", seq2seq=False), tiny_model("llama"), ["language_model"])

    @pytest.mark.parametrize(
        ("fields", "message"),
        [({"r": 0}, "--lora_r"), ({"alpha": 0}, "--lora_alpha"), ({"dropout": 1.0}, "--lora_dropout")],
    )
    def test_bad_lora_settings(self, fields, message):
        with pytest.raises(ValueError, match=message):
            LoraSettings(**fields)


@pytest.mark.parametrize("name", NAMED_CONFIGS)
def test_shipped_deepspeed_configs_resolve_by_name(name):
    config = json.loads(open(resolve_deepspeed_config(name), encoding="utf-8").read())
    assert config["zero_optimization"]["stage"] == (2 if name == "zero2" else 3)
    assert config["train_micro_batch_size_per_gpu"] == config["gradient_accumulation_steps"] == "auto"
    assert ("optimizer" in config) == (name == "zero3_offload")  # offload needs DeepSpeed's CPU AdamW


class TestBadDeepSpeedConfigs:
    def test_a_missing_file(self, tmp_path):
        with pytest.raises(ValueError, match="--deepspeed .*no such file"):
            resolve_deepspeed_config(str(tmp_path / "zero4.json"))

    def test_a_file_that_does_not_parse(self, tmp_path):
        path = tmp_path / "broken.json"
        path.write_text('{"zero_optimization": {"stage": 2,}')
        with pytest.raises(ValueError, match="--deepspeed .*broken.json: not a readable JSON file"):
            resolve_deepspeed_config(str(path))

    def test_a_file_without_zero_optimization(self, tmp_path):
        path = tmp_path / "plain.json"
        path.write_text('{"train_batch_size": 8}')
        with pytest.raises(ValueError, match='needs a "zero_optimization" object'):
            resolve_deepspeed_config(str(path))

    def test_a_user_file_is_accepted_as_is(self, tmp_path):
        path = tmp_path / "mine.json"
        path.write_text('{"zero_optimization": {"stage": 1}}')
        assert resolve_deepspeed_config(str(path)) == str(path)
