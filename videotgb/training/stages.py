"""The four training stages of VideoTGB: which parameters train, which losses apply, and LoRA for the last stage.

| stage | trains | loss |
|---|---|---|
| `grounding` | the bridge | span loss on precomputed pseudo spans |
| `self_refine` | bridge, Q-Former, query tokens, projection (+ the LM when it is seq2seq, as for BLIP-2 + T5) | LM + span loss (pseudo spans made online) |
| `instruct` | Q-Former, query tokens, projection | LM loss |
| `instruct_lora` | as `instruct`, plus LoRA on the LM's query and value projections | LM loss |

The vision tower is frozen in every stage, and so are the bridge's rotary tables (fixed by construction). See
docs/method.md#training-stages. Not part of a checkpoint's remote code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn

STAGES = ("grounding", "self_refine", "instruct", "instruct_lora")

# The paper's LoRA: r 8, alpha 32, dropout 0.1 on the language model's query and value projections.
LORA_TARGETS = {
    "causal": r".*language_model.*\.(q_proj|v_proj)$",  # LLaMA / Vicuna names
    "seq2seq": r".*language_model.*\.(q|v)$",  # T5 names
}


@dataclass(frozen=True)
class LoraSettings:
    """LoRA of the `instruct_lora` stage; `target_modules=None` picks the paper's targets for the model's LM kind."""

    r: int = 8
    alpha: int = 32
    dropout: float = 0.1
    target_modules: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"--lora_r must be a positive integer, got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"--lora_alpha must be positive, got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"--lora_dropout must be in [0, 1), got {self.dropout!r}")


@dataclass(frozen=True)
class Stage:
    """What one training stage trains and optimises."""

    name: str
    trainable: tuple[str, ...]  # top-level attribute names of VideoTGBForConditionalGeneration
    lm_loss: bool
    span_loss: str | None  # "precomputed" (pseudo spans in the data), "online" (made from the batch) or None
    lora: bool


def get_stage(name: str, seq2seq: bool) -> Stage:
    """The stage called `name` for a model whose language model is seq2seq (`True`) or causal.

    Raises ValueError naming `--stage` and the valid names for an unknown stage.
    """
    visual = ("qformer", "query_tokens", "language_projection")
    if name == "grounding":
        return Stage(name, ("bridge",), lm_loss=False, span_loss="precomputed", lora=False)
    if name == "self_refine":
        trainable = ("bridge", *visual, *(("language_model",) if seq2seq else ()))
        return Stage(name, trainable, lm_loss=True, span_loss="online", lora=False)
    if name == "instruct":
        return Stage(name, visual, lm_loss=True, span_loss=None, lora=False)
    if name == "instruct_lora":
        return Stage(name, visual, lm_loss=True, span_loss=None, lora=True)
    raise ValueError(f"--stage must be one of {', '.join(STAGES)}; got {name!r}")


def with_extra_modules(stage: Stage, model: nn.Module, names) -> Stage:
    """`stage` that also trains the top-level modules `names` of `model` in full (`--also_train`).

    For small models trained from scratch (the synthetic benchmark's tiny model trains its vision tower and language
    model this way); a large pretrained language model is better tuned with `instruct_lora`. Raises ValueError
    naming `--also_train` for a name that is not a top-level module with parameters, or with a LoRA stage (whose
    adapters would then wrap a language model that trains in full).
    """
    names = tuple(dict.fromkeys(names or ()))
    if not names:
        return stage
    available = sorted(name for name, module in model.named_children() if any(True for _ in module.parameters()))
    available += sorted(name for name, _ in model.named_parameters(recurse=False))
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ValueError(
            f"--also_train {' '.join(unknown)}: not a part of this model; the parts are {', '.join(available)}"
        )
    if stage.lora:
        raise ValueError(f"--also_train cannot be combined with --stage {stage.name} (LoRA): use --stage instruct")
    trainable = stage.trainable + tuple(name for name in names if name not in stage.trainable)
    return dataclasses.replace(stage, trainable=trainable)


def _fixed_parameters(model: nn.Module) -> set[int]:
    """Parameters that never train: the bridge's rotary tables (frozen by construction)."""
    from ..modeling_videotgb import VideoTGBRotaryTable

    return {
        id(parameter)
        for module in model.modules()
        if isinstance(module, VideoTGBRotaryTable)
        for parameter in module.parameters()
    }


def apply_stage(model, stage: Stage, lora: LoraSettings | None = None):
    """Freeze everything but what `stage` trains; for a LoRA stage, wrap the model with peft's LoRA on the LM only.

    Args:
        model: a `VideoTGBForConditionalGeneration`.
        stage: from `get_stage`.
        lora: LoRA settings; only for a stage with LoRA (defaults to the paper's when `None` there).

    Returns:
        The model to train: `model` itself, or a `peft.PeftModel` around it for a LoRA stage. Parameters outside
        the stage's modules (and the LoRA weights) have `requires_grad=False`.
    """
    if lora is not None and not stage.lora:
        raise ValueError(f"LoRA settings were given, but stage {stage.name!r} trains no LoRA (use instruct_lora)")
    fixed = _fixed_parameters(model)
    for name, parameter in model.named_parameters():
        top = name.split(".", 1)[0]
        parameter.requires_grad_(top in stage.trainable and id(parameter) not in fixed)
    if not stage.lora:
        return model

    from peft import LoraConfig, get_peft_model

    settings = lora or LoraSettings()
    kind = "causal" if model.config.use_decoder_only_language_model else "seq2seq"
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules or LORA_TARGETS[kind],
    )
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    wrapped = get_peft_model(model, config)
    for name, parameter in model.named_parameters():  # peft froze everything but the adapters
        if name in trainable:
            parameter.requires_grad_(True)
    return wrapped


def grounding_loss(model, flow, flow_mask, bridge_input_ids, bridge_attention_mask, span_targets):
    """The `grounding` stage's loss: the bridge alone against `(batch, 2)` span-target ratios, without running the
    vision tower or the language model (which that stage does not train).

    Returns:
        The loss and the `(rows with a target,)` IoUs of the bridge's most likely spans with the targets.
    """
    from ..modeling_videotgb import span_cross_entropy, span_targets_to_positions
    from .metrics import grounding_iou

    output = model.bridge(flow, bridge_input_ids, flow_mask=flow_mask, attention_mask=bridge_attention_mask)
    positions = span_targets_to_positions(span_targets, output.flow_lengths).to(output.start_logits.device)
    loss = span_cross_entropy(output.start_logits, output.end_logits, positions[:, 0], positions[:, 1])
    return loss, grounding_iou(output.start_logits.detach(), output.end_logits.detach(), positions)


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters that will train."""
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


__all__ = [
    "LORA_TARGETS",
    "STAGES",
    "LoraSettings",
    "Stage",
    "apply_stage",
    "get_stage",
    "grounding_loss",
    "trainable_parameter_names",
    "with_extra_modules",
]
