"""Training VideoTGB with `transformers.Trainer`: stages, DeepSpeed configurations. Not part of a checkpoint's
remote code."""

from .deepspeed import NAMED_CONFIGS, resolve_deepspeed_config
from .stages import (
    LORA_TARGETS,
    STAGES,
    LoraSettings,
    Stage,
    apply_stage,
    get_stage,
    grounding_loss,
    trainable_parameter_names,
    with_extra_modules,
)

__all__ = [
    "LORA_TARGETS",
    "NAMED_CONFIGS",
    "STAGES",
    "LoraSettings",
    "Stage",
    "apply_stage",
    "get_stage",
    "grounding_loss",
    "resolve_deepspeed_config",
    "trainable_parameter_names",
    "with_extra_modules",
]
