"""Configuration of VideoTGB: InstructBLIP / BLIP-2 plus a Temporal Grounding Bridge (see `docs/method.md`)."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.models.instructblip.configuration_instructblip import (
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
)
from transformers.utils import logging

logger = logging.get_logger(__name__)

BRIDGE_MODES = ("fusion", "multi_modal")
ROTARY_INITS = ("sinusoidal", "normal")
SELECTION_STRATEGIES = ("argmax", "sample")
FRAME_AGGREGATIONS = ("concat", "mean")


def _require_choice(config_name: str, field: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{config_name}.{field} must be one of {choices}, got {value!r}")


def _require_positive(config_name: str, field: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{config_name}.{field} must be a positive integer, got {value!r}")


class VideoTGBBridgeConfig(PretrainedConfig):
    r"""
    Configuration of the Temporal Grounding Bridge (TGB): a RoPE-BERT encoder over optical-flow steps that
    cross-attends to the question and predicts start / end logits of the relevant time spans.

    The defaults describe the bridge of the released VideoTGB-7B: a `bert-base-uncased` encoder whose layers from
    `fusion_layer` on carry new cross-attention blocks, reading RAFT flow at 224x224.

    Args:
        vocab_size (`int`, defaults to 30522): vocabulary of the question tokenizer (BERT uncased).
        hidden_size (`int`, defaults to 768): width of the encoder.
        num_hidden_layers (`int`, defaults to 12): encoder layers (BERT numbering; see `mode`).
        num_attention_heads (`int`, defaults to 12): attention heads; the head size must be even (rotary).
        intermediate_size (`int`, defaults to 3072): feed-forward width.
        hidden_act (`str`, defaults to `"gelu"`): feed-forward activation.
        hidden_dropout_prob (`float`, defaults to 0.1): dropout after embeddings and sub-layers.
        attention_probs_dropout_prob (`float`, defaults to 0.1): dropout on attention probabilities.
        layer_norm_eps (`float`, defaults to 1e-12): epsilon of the encoder's LayerNorms (BERT's).
        flow_layer_norm_eps (`float`, defaults to 1e-5): epsilon of the LayerNorm after the flow embedding.
        type_vocab_size (`int`, defaults to 2): token-type embeddings (only type 0 is used).
        pad_token_id (`int`, defaults to 0): padding id of the question tokenizer.
        max_position_embeddings (`int`, defaults to 512): rows of the flow position table and of the flow rotary
            table; a video may have at most `max_position_embeddings - 2` flow steps (BOS and EOS take two).
        max_text_positions (`int`, defaults to 512): rows of the question rotary table (longest question).
        fusion_layer (`int`, defaults to 6): first layer with cross-attention to the question.
        mode (`str`, defaults to `"fusion"`): `"fusion"` builds and runs only layers `fusion_layer ..
            num_hidden_layers - 1` (the original's training mode); `"multi_modal"` builds and runs all of them
            (layers before `fusion_layer` are self-attention only). The original trained in one mode and evaluated
            in another; here one checkpoint has one mode.
        flow_size (`int`, defaults to 224): side of the square flow fields the bridge reads.
        flow_patch_size (`int`, defaults to 16): patch of the flow embedding's convolution; the patch grid
            `(flow_size / flow_patch_size) ** 2` is pooled to one vector per flow step.
        flow_estimator (`str`, defaults to `"raft_large"`): the optical-flow estimator the bridge was trained on;
            flow from another estimator has other statistics, so processors check this.
        rotary_init (`str`, defaults to `"sinusoidal"`): how new rotary tables are filled. The original's tables were
            overwritten by BERT's N(0, 0.02) init and frozen (`"normal"` reproduces that for new models); both kinds
            are stored in the state dict, so the original random tables load exactly.
        initializer_range (`float`, defaults to 0.02): std of the normal init of new weights.
    """

    model_type = "videotgb_bridge"
    base_config_key = "bridge_config"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    flow_layer_norm_eps: float = 1e-5
    type_vocab_size: int = 2
    pad_token_id: int | None = 0
    max_position_embeddings: int = 512
    max_text_positions: int = 512
    fusion_layer: int = 6
    mode: str = "fusion"
    flow_size: int = 224
    flow_patch_size: int = 16
    flow_estimator: str = "raft_large"
    rotary_init: str = "sinusoidal"
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        name = type(self).__name__
        for field in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "max_text_positions",
            "flow_size",
            "flow_patch_size",
        ):
            _require_positive(name, field, getattr(self, field))
        _require_choice(name, "mode", self.mode, BRIDGE_MODES)
        _require_choice(name, "rotary_init", self.rotary_init, ROTARY_INITS)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"{name}.hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError(
                f"{name}: the head size {self.hidden_size // self.num_attention_heads} must be even (rotary)"
            )
        if not 0 <= self.fusion_layer < self.num_hidden_layers:
            raise ValueError(
                f"{name}.fusion_layer must be in [0, num_hidden_layers={self.num_hidden_layers}), got {self.fusion_layer}"
            )
        if self.flow_size % self.flow_patch_size:
            raise ValueError(
                f"{name}.flow_size ({self.flow_size}) must be a multiple of flow_patch_size ({self.flow_patch_size})"
            )
        if self.max_position_embeddings < 3:
            raise ValueError(f"{name}.max_position_embeddings must be >= 3 (BOS, one flow step, EOS)")

    @property
    def max_flow_steps(self) -> int:
        """Longest flow sequence the bridge accepts (BOS and EOS take two positions)."""
        return self.max_position_embeddings - 2

    @property
    def first_layer(self) -> int:
        """Index of the first layer this bridge builds and runs."""
        return self.fusion_layer if self.mode == "fusion" else 0


class VideoTGBConfig(PretrainedConfig):
    r"""
    Configuration of [`VideoTGBForConditionalGeneration`]: a BLIP-2 / InstructBLIP vision-language model that sees
    only `num_keyframes` frames of a video, chosen by a Temporal Grounding Bridge from optical flow and the question.

    The defaults describe the released VideoTGB-7B: InstructBLIP (EVA ViT-g/14, Q-Former reading the instruction,
    Vicuna-7B) with a BERT-base bridge, 32 candidate frames and 4 keyframes averaged into 32 visual tokens.

    Args:
        vision_config (`dict` or `InstructBlipVisionConfig`): the ViT.
        qformer_config (`dict` or `InstructBlipQFormerConfig`): the Q-Former; `encoder_hidden_size` follows the ViT.
        text_config (`dict` or `PretrainedConfig`): the language model, causal (LLaMA, ...) or seq2seq (T5, ...);
            a dict needs `model_type` (defaults to `"llama"`).
        bridge_config (`dict` or [`VideoTGBBridgeConfig`]): the Temporal Grounding Bridge.
        num_query_tokens (`int`, defaults to 32): learned queries of the Q-Former; visual tokens per frame.
        qformer_text_input (`bool`, defaults to `True`): InstructBLIP's instruction-aware Q-Former (reads the
            question as BERT tokens) when `True`, BLIP-2's when `False`.
        num_candidate_frames (`int`, defaults to 32): frames sampled from a video for the bridge to choose from.
        num_keyframes (`int`, defaults to 4): frames that go through the ViT and the language model (`K`).
        num_spans (`int`, defaults to 2): spans drawn from the bridge's logits per video.
        span_end_inclusive (`bool`, defaults to `True`): whether a span's end frame is selected (the intended
            behaviour; copies of the original disagreed).
        train_selection (`str`, defaults to `"sample"`): how spans are drawn in training mode (`"sample"`: categorical
            draws, the original's behaviour; `"argmax"`).
        eval_selection (`str`, defaults to `"argmax"`): how spans are drawn in eval mode. The original sampled at
            evaluation too, so its scores varied run to run; `"argmax"` is deterministic.
        frame_aggregation (`str`, defaults to `"mean"`): `"concat"` gives `num_keyframes * num_query_tokens` visual
            tokens in time order (self-refinement stage, demo), `"mean"` averages the frames into `num_query_tokens`
            tokens (instruction stages, QA evaluation).
        span_loss_weight (`float`, defaults to 1.0): weight of the span loss added to the language-model loss.
        initializer_range (`float`, defaults to 0.02): std of the init of new weights (query tokens, projection).

    Example:

    ```python
    >>> from videotgb import VideoTGBConfig, VideoTGBForConditionalGeneration

    >>> config = VideoTGBConfig(
    ...     vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
    ...                    "num_attention_heads": 4, "image_size": 28, "patch_size": 14},
    ...     qformer_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
    ...                     "num_attention_heads": 4, "vocab_size": 100},
    ...     text_config={"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
    ...                  "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 100},
    ...     bridge_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "fusion_layer": 1,
    ...                    "num_attention_heads": 4, "vocab_size": 100, "flow_size": 32},
    ...     num_query_tokens=4, num_candidate_frames=8, num_keyframes=2,
    ... )
    >>> model = VideoTGBForConditionalGeneration(config)
    >>> config.num_keyframes
    2

    ```
    """

    model_type = "videotgb"
    sub_configs_defaults = {
        "vision_config": InstructBlipVisionConfig,
        "qformer_config": InstructBlipQFormerConfig,
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "bridge_config": VideoTGBBridgeConfig,
    }

    vision_config: dict | PretrainedConfig | None = None
    qformer_config: dict | PretrainedConfig | None = None
    text_config: dict | PretrainedConfig | None = None
    bridge_config: dict | PretrainedConfig | None = None
    num_query_tokens: int = 32
    qformer_text_input: bool = True
    num_candidate_frames: int = 32
    num_keyframes: int = 4
    num_spans: int = 2
    span_end_inclusive: bool = True
    train_selection: str = "sample"
    eval_selection: str = "argmax"
    frame_aggregation: str = "mean"
    span_loss_weight: float = 1.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.qformer_config.encoder_hidden_size = self.vision_config.hidden_size
        self.is_encoder_decoder = self.text_config.is_encoder_decoder
        self.use_decoder_only_language_model = self.text_config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        name = type(self).__name__
        for field in ("num_query_tokens", "num_candidate_frames", "num_keyframes", "num_spans"):
            _require_positive(name, field, getattr(self, field))
        if self.num_keyframes > self.num_candidate_frames:
            raise ValueError(
                f"{name}.num_keyframes ({self.num_keyframes}) cannot exceed num_candidate_frames "
                f"({self.num_candidate_frames})"
            )
        _require_choice(name, "train_selection", self.train_selection, SELECTION_STRATEGIES)
        _require_choice(name, "eval_selection", self.eval_selection, SELECTION_STRATEGIES)
        _require_choice(name, "frame_aggregation", self.frame_aggregation, FRAME_AGGREGATIONS)
        if not self.span_loss_weight >= 0:
            raise ValueError(f"{name}.span_loss_weight must be >= 0, got {self.span_loss_weight!r}")
        if not self.use_decoder_only_language_model and not self.text_config.is_encoder_decoder:
            raise ValueError(
                f"{name}.text_config: model_type {self.text_config.model_type!r} is neither a causal nor a seq2seq "
                "language model"
            )

    @property
    def num_visual_tokens(self) -> int:
        """Visual tokens placed before the prompt for a sample with frames."""
        if self.frame_aggregation == "concat":
            return self.num_keyframes * self.num_query_tokens
        return self.num_query_tokens


__all__ = ["VideoTGBBridgeConfig", "VideoTGBConfig"]
