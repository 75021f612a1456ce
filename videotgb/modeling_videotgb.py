"""PyTorch VideoTGB: InstructBLIP / BLIP-2 that sees K keyframes chosen by a Temporal Grounding Bridge.

The vision tower, query tokens, Q-Former, language projection and language model are transformers' own BLIP-2 /
InstructBLIP modules under the same attribute names, so BLIP-2 and InstructBLIP checkpoints load without renaming
and, given the same frames, VideoTGB computes exactly what `InstructBlipVideoForConditionalGeneration` computes.
The bridge (`VideoTGBBridgeModel`) is new: see `VideoTGBBridgeConfig` and `docs/method.md` (the bridge, keyframe
selection and losses).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from logging import Filter, LogRecord

import torch
from torch import nn
from torch.nn import functional as F
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.distributed.fsdp import is_fsdp_managed_module
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.blip_2.configuration_blip_2 import Blip2QFormerConfig
from transformers.models.blip_2.modeling_blip_2 import Blip2QFormerModel
from transformers.models.instructblip.modeling_instructblip import InstructBlipQFormerModel, InstructBlipVisionModel
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, ModelOutput, cached_file, logging

from .configuration_videotgb import VideoTGBBridgeConfig, VideoTGBConfig
from .keyframes import bin_midpoints, select_keyframes

logger = logging.get_logger(__name__)

IGNORE_INDEX = -100


# ----------------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class VideoTGBBridgeOutput(ModelOutput):
    r"""
    start_logits (`torch.FloatTensor` of shape `(batch_size, flow_steps)`):
        Logits of a span starting at each flow step; padded steps hold the dtype's minimum.
    end_logits (`torch.FloatTensor` of shape `(batch_size, flow_steps)`):
        Logits of a span ending at each flow step; padded steps hold the dtype's minimum.
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, flow_steps + 2, hidden_size)`):
        Encoder output over [BOS, flow steps, EOS, padding].
    hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        Input of the first built layer and output of every built layer, with `output_hidden_states=True`.
    attentions (`tuple(torch.FloatTensor)`, *optional*):
        Self-attention probabilities of every built layer, with `output_attentions=True` (eager attention).
    cross_attentions (`tuple(torch.FloatTensor)`, *optional*):
        Cross-attention probabilities of the layers with cross-attention, with `output_attentions=True`.
    flow_lengths (`torch.LongTensor` of shape `(batch_size,)`):
        Valid flow steps of each video (from `flow_mask`).
    """

    start_logits: torch.FloatTensor | None = None
    end_logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    flow_lengths: torch.LongTensor | None = None


@dataclass
class VideoTGBOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*):
        `lm_loss + config.span_loss_weight * span_loss` over the terms that were computed.
    lm_loss (`torch.FloatTensor` of shape `()`, *optional*):
        Language-modelling loss, when `labels` are given.
    span_loss (`torch.FloatTensor` of shape `()`, *optional*):
        `(CE(start) + CE(end)) / 2` of the bridge against `span_targets`, when they are given.
    logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`):
        Language-model logits. For a causal LM the sequence is the visual tokens followed by the prompt (placed as
        in `merge_visual_prefix`); for a seq2seq LM it is the decoder sequence.
    start_logits (`torch.FloatTensor` of shape `(batch_size, flow_steps)`, *optional*):
        The bridge's span-start logits, when the bridge ran.
    end_logits (`torch.FloatTensor` of shape `(batch_size, flow_steps)`, *optional*):
        The bridge's span-end logits, when the bridge ran.
    keyframe_indices (`torch.LongTensor` of shape `(batch_size, num_keyframes)`):
        Candidate-frame indices that went through the vision tower (all zeros for samples without frames).
    visual_attention_mask (`torch.LongTensor` of shape `(batch_size, num_visual_tokens)`):
        1 where a sample has visual tokens, 0 for samples without frames.
    language_model_outputs (`ModelOutput`):
        The language model's own output.
    """

    loss: torch.FloatTensor | None = None
    lm_loss: torch.FloatTensor | None = None
    span_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    start_logits: torch.FloatTensor | None = None
    end_logits: torch.FloatTensor | None = None
    keyframe_indices: torch.LongTensor | None = None
    visual_attention_mask: torch.LongTensor | None = None
    language_model_outputs: ModelOutput | None = None

    def to_tuple(self) -> tuple:
        return tuple(self[key].to_tuple() if key == "language_model_outputs" else self[key] for key in self.keys())


# ----------------------------------------------------------------------------------------------------------------------
# Pure helpers
# ----------------------------------------------------------------------------------------------------------------------


def sinusoidal_rotary_table(num_positions: int, dim: int) -> torch.Tensor:
    """RoFormer's sinusoid table `(num_positions, dim)`: sines of the even frequencies, then cosines of the odd ones."""
    positions = torch.arange(num_positions, dtype=torch.float64)[:, None]
    exponents = 2 * (torch.arange(dim, dtype=torch.float64) // 2) / dim
    angles = positions / torch.pow(10000.0, exponents)[None, :]
    table = torch.empty(num_positions, dim, dtype=torch.float64)
    table[:, : dim // 2] = torch.sin(angles[:, 0::2])
    table[:, dim // 2 :] = torch.cos(angles[:, 1::2])
    return table.float()


def apply_rotary(states: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate `(batch, heads, length, head_dim)` states by a `(length, head_dim)` RoFormer table."""
    sin, cos = table.to(states.dtype).chunk(2, dim=-1)
    sin = torch.stack([sin, sin], dim=-1).reshape(table.shape)
    cos = torch.stack([cos, cos], dim=-1).reshape(table.shape)
    rotated_half = torch.stack([-states[..., 1::2], states[..., ::2]], dim=-1).reshape(states.shape)
    return states * cos + rotated_half * sin


def span_cross_entropy(
    start_logits: torch.Tensor, end_logits: torch.Tensor, start_positions: torch.Tensor, end_positions: torch.Tensor
) -> torch.Tensor:
    """`(CE(start) + CE(end)) / 2` over the samples whose positions are not `IGNORE_INDEX`: the span loss.

    Returns a zero that keeps the graph when no sample has a target.
    """
    if (start_positions == IGNORE_INDEX).all():
        return (start_logits.sum() + end_logits.sum()) * 0.0
    start_loss = F.cross_entropy(start_logits.float(), start_positions, ignore_index=IGNORE_INDEX)
    end_loss = F.cross_entropy(end_logits.float(), end_positions, ignore_index=IGNORE_INDEX)
    return (start_loss + end_loss) / 2


def span_targets_to_positions(span_targets: torch.Tensor, flow_lengths: torch.Tensor) -> torch.Tensor:
    """Map `(batch, 2)` span ratios in [0, 1] to flow-step indices `round(ratio * (n - 1))`.

    Rows with a NaN or negative ratio, or a video without flow, become `IGNORE_INDEX`.
    """
    lengths = flow_lengths.to(span_targets.device)[:, None]
    positions = torch.round(span_targets.float().clamp(0, 1) * (lengths - 1).clamp(min=0)).long()
    ignored = untargeted_rows(span_targets) | (flow_lengths.to(span_targets.device) < 1)
    return positions.masked_fill(ignored[:, None], IGNORE_INDEX)


def untargeted_rows(span_targets: torch.Tensor) -> torch.Tensor:
    """`(batch,)` bool: the rows of `(batch, 2)` span targets that hold no target (a NaN or negative ratio)."""
    return torch.isnan(span_targets).any(-1) | (span_targets < 0).any(-1)


def merge_visual_prefix(
    visual_embeds: torch.Tensor,
    visual_mask: torch.Tensor,
    text_embeds: torch.Tensor,
    text_mask: torch.Tensor,
    text_labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Place each sample's visual tokens right before its first text token.

    With right padding (training) the visual tokens lead every row; with left padding (batched generation) they
    follow the row's padding, so that every masked position is leading and no gap opens inside a prompt. The
    original concatenated `[visual; text]` while its tokenizer padded on the left, which left pads in the middle.

    Args:
        visual_embeds: `(batch, visual_tokens, hidden)`.
        visual_mask: `(batch, visual_tokens)`, 0 for samples without frames.
        text_embeds: `(batch, text_length, hidden)`.
        text_mask: `(batch, text_length)`.
        text_labels: optional `(batch, text_length)` labels.

    Returns:
        `(batch, visual_tokens + text_length, hidden)` embeddings, the matching attention mask, and labels with
        `IGNORE_INDEX` on visual positions and on each row's first text token (or `None`). Labels align with
        `input_ids` as for any transformers causal LM, whose first token is never a target; here it would otherwise
        become one, predicted from the last visual token (BLIP-2 likewise drops it).
    """
    batch_size, num_visual, hidden = visual_embeds.shape
    text_length = text_embeds.shape[1]
    present = text_mask.bool()
    leading_pads = torch.where(
        present.any(1), present.int().argmax(1), torch.zeros_like(present[:, 0], dtype=torch.long)
    )
    positions = torch.arange(num_visual + text_length, device=text_embeds.device)[None, :]
    lead = leading_pads[:, None]
    is_visual = (positions >= lead) & (positions < lead + num_visual)
    text_index = torch.where(positions < lead, positions, positions - num_visual).clamp(0, max(text_length - 1, 0))
    visual_index = (positions - lead).clamp(0, num_visual - 1)

    def gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if values.dim() == 3:
            return values.gather(1, index[..., None].expand(-1, -1, hidden))
        return values.gather(1, index)

    embeds = torch.where(is_visual[..., None], gather(visual_embeds, visual_index), gather(text_embeds, text_index))
    mask = torch.where(is_visual, gather(visual_mask.to(text_mask.dtype), visual_index), gather(text_mask, text_index))
    labels = None
    if text_labels is not None:
        first_text = positions == lead + num_visual
        ignored = is_visual | first_text
        labels = torch.where(ignored, torch.full_like(positions, IGNORE_INDEX), gather(text_labels, text_index))
    return embeds, mask, labels


_ARGUMENTS_FORWARD_REFUSES = {
    "position_ids": "the language model reads the visual tokens merged with the text; its positions are not the "
    "text's alone, so they are left to the language model",
}
_ARGUMENTS_GENERATE_REFUSES = {
    "labels": "generate computes no loss; pass labels to forward",
    "span_targets": "generate computes no loss; pass span_targets to forward",
    "inputs": "pass the prompt as input_ids (or its embeddings as inputs_embeds)",
}


def _refuse_arguments(kwargs: dict, refused: dict[str, str]) -> None:
    """Raise a ValueError naming the first of `kwargs` that VideoTGB cannot pass on, and why."""
    for name, reason in refused.items():
        if name in kwargs:
            raise ValueError(f"{name} cannot be passed here: {reason}")


def summarize_keys(keys: set[str], all_keys: list[str]) -> str:
    """Name a group of state-dict keys by the shortest module paths holding only keys of the group, with one layer
    number merged (`bridge.encoder.layer.{3,4,5}.crossattention`)."""
    below, below_in_group = Counter(), Counter()
    for key in all_keys:
        parts = key.split(".")
        for depth in range(1, len(parts) + 1):
            prefix = ".".join(parts[:depth])
            below[prefix] += 1
            below_in_group[prefix] += key in keys
    prefixes = set()
    for key in keys:
        parts = key.split(".")
        for depth in range(1, len(parts) + 1):
            prefix = ".".join(parts[:depth])
            if below[prefix] == below_in_group[prefix]:
                prefixes.add(prefix)
                break
    numbers: dict[str, list[int]] = {}
    for prefix in prefixes:
        found = re.findall(r"(?<=\.)\d+(?=\.|$)", prefix)
        if len(found) == 1:
            numbers.setdefault(re.sub(r"(?<=\.)\d+(?=\.|$)", "{}", prefix), []).append(int(found[0]))
        else:
            numbers[prefix] = []
    names = [
        pattern.replace("{}", "{" + ",".join(map(str, sorted(values))) + "}") if values else pattern
        for pattern, values in numbers.items()
    ]
    return ", ".join(sorted(names))


class _HeldBackLoadReport(Filter):
    """Holds back the load report that transformers logs (a record containing "LOAD REPORT")."""

    def __init__(self):
        super().__init__()
        self.held: list[LogRecord] = []

    def filter(self, record: LogRecord) -> bool:
        if "LOAD REPORT" in record.getMessage():
            self.held.append(record)
            return False
        return True


@contextlib.contextmanager
def held_back_load_report() -> Iterator[None]:
    """Keep transformers' load report of the `from_pretrained` calls inside from being logged; if one of them
    fails, log it after all, since it explains the failure (e.g. mismatched shapes)."""
    transformers_logger = logging.get_logger("transformers.modeling_utils")
    hold = _HeldBackLoadReport()
    transformers_logger.addFilter(hold)
    try:
        yield
    except BaseException:
        transformers_logger.removeFilter(hold)
        for record in hold.held:
            transformers_logger.handle(record)
        raise
    finally:
        transformers_logger.removeFilter(hold)


def load_safetensors_state_dict(name_or_path: str, **hub_kwargs) -> dict[str, torch.Tensor]:
    """State dict of a checkpoint folder or Hub id from `model.safetensors` or its sharded index (never pickle)."""
    from safetensors.torch import load_file

    lookup = {"_raise_exceptions_for_missing_entries": False, **hub_kwargs}
    single = cached_file(name_or_path, SAFE_WEIGHTS_NAME, **lookup)
    if single is not None:
        return load_file(single)
    index_file = cached_file(name_or_path, SAFE_WEIGHTS_INDEX_NAME, **lookup)
    if index_file is None:
        raise OSError(
            f"{name_or_path} has no {SAFE_WEIGHTS_NAME} or {SAFE_WEIGHTS_INDEX_NAME}: VideoTGB loads safetensors "
            "weights only (convert pickle checkpoints first)"
        )
    with open(index_file, encoding="utf-8") as handle:
        shards = sorted(set(json.load(handle)["weight_map"].values()))
    state_dict: dict[str, torch.Tensor] = {}
    for shard in shards:
        state_dict.update(load_file(cached_file(name_or_path, shard, **hub_kwargs)))
    return state_dict


def config_from_vlm(vlm_config, bridge_config: dict, source: str, **config_fields) -> VideoTGBConfig:
    """A `VideoTGBConfig` with the vision tower, Q-Former, query tokens and language model of a BLIP-2 /
    InstructBLIP config (`vlm_config`, read from `source`), the bridge config `bridge_config` (a dict of
    `VideoTGBBridgeConfig` fields) and other `VideoTGBConfig` fields.

    Raises ValueError when `vlm_config` is not a BLIP-2 / InstructBLIP config.
    """
    if not all(hasattr(vlm_config, name) for name in ("vision_config", "qformer_config", "text_config")):
        raise ValueError(
            f"{source} is a {vlm_config.model_type!r} checkpoint, not BLIP-2 / InstructBLIP "
            "(vision_config, qformer_config and text_config are needed)"
        )

    def sub_config(config) -> dict:
        fields = config.to_dict()
        fields.pop("transformers_version", None)
        fields.pop("architectures", None)
        return fields

    vision_fields, qformer_fields = sub_config(vlm_config.vision_config), sub_config(vlm_config.qformer_config)
    vision_fields.pop("model_type", None)
    qformer_fields.pop("model_type", None)
    return VideoTGBConfig(
        vision_config=vision_fields,
        qformer_config=qformer_fields,
        text_config=sub_config(vlm_config.text_config),
        bridge_config=bridge_config,
        num_query_tokens=vlm_config.num_query_tokens,
        qformer_text_input=vlm_config.model_type in ("instructblip", "instructblipvideo"),
        **config_fields,
    )


class WrongModelTypeError(ValueError):
    """A checkpoint's `config.json` names a `model_type` that the class asked to load it cannot build."""


BLIP_MODEL_TYPES = ("blip-2", "instructblip", "instructblipvideo")
_CONFIG_LOOKUP_KWARGS = (
    "cache_dir",
    "force_download",
    "proxies",
    "token",
    "local_files_only",
    "revision",
    "subfolder",
)


class SafetensorsOnlyMixin:
    """`from_pretrained` that refuses checkpoints of another model type and reads safetensors weights only.

    Without an explicit `config`, the checkpoint's `config.json` must name one of `loadable_model_types`: transformers
    would otherwise only log a warning and build the class's default configuration (VideoTGB-7B) around weights
    that do not fit it. Safetensors only, unless the caller explicitly passes `use_safetensors=False` (for instance
    for a third-party BLIP-2 checkpoint published only as pickles): a pickled `pytorch_model.bin` can run code when
    loaded; VideoTGB checkpoints are always written as safetensors."""

    loadable_model_types: tuple[str, ...] = ()

    @classmethod
    def check_model_type(cls, pretrained_model_name_or_path, **hub_kwargs) -> None:
        """Raise `WrongModelTypeError` when the checkpoint's `config.json` names a model type this class does not
        load (BLIP-2 / InstructBLIP checkpoints get a pointer to `from_blip_and_bert`)."""
        lookup = {key: hub_kwargs[key] for key in _CONFIG_LOOKUP_KWARGS if key in hub_kwargs}
        config_dict, _ = PretrainedConfig.get_config_dict(pretrained_model_name_or_path, **lookup)
        model_type = config_dict.get("model_type")
        if model_type is None or model_type in cls.loadable_model_types:
            return
        expected = " or ".join(repr(name) for name in cls.loadable_model_types)
        message = (
            f"{pretrained_model_name_or_path} holds a {model_type!r} checkpoint, but {cls.__name__} loads {expected} "
            "checkpoints (pass `config=` explicitly to load its weights anyway)."
        )
        if model_type in BLIP_MODEL_TYPES:
            message += (
                " To build VideoTGB from a BLIP-2 / InstructBLIP checkpoint and a BERT checkpoint for the bridge, use "
                "`VideoTGBForConditionalGeneration.from_blip_and_bert(vlm, bert)` or the command "
                "`videotgb init --vlm VLM --bert BERT --output DIR`."
            )
        raise WrongModelTypeError(message)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        if kwargs.get("config") is None and pretrained_model_name_or_path is not None:
            cls.check_model_type(pretrained_model_name_or_path, **kwargs)
        if kwargs.get("use_safetensors") is None:
            kwargs["use_safetensors"] = True
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except OSError as error:
            if not kwargs["use_safetensors"] or "safetensors" not in str(error):
                raise
            raise OSError(
                f"{error} {cls.__name__} reads safetensors weights only; pass use_safetensors=False to read pickled "
                "weights from a source you trust"
            ) from error


# ----------------------------------------------------------------------------------------------------------------------
# Temporal Grounding Bridge
# ----------------------------------------------------------------------------------------------------------------------


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class VideoTGBRotaryTable(nn.Module):
    """A frozen `(num_positions, head_dim)` rotary table, stored in the state dict as `weight`.

    Stored rather than recomputed because the original checkpoints carry random tables (see `rotary_init`).
    """

    def __init__(self, num_positions: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_positions, dim), requires_grad=False)

    def forward(self, length: int) -> torch.Tensor:
        if length > self.weight.shape[0]:
            raise ValueError(f"sequence of {length} positions exceeds the rotary table's {self.weight.shape[0]} rows")
        return self.weight[:length]


class VideoTGBQuestionEmbeddings(nn.Module):
    """Word + token-type-0 embeddings of the question, LayerNorm, dropout; no absolute positions (BERT names)."""

    def __init__(self, config: VideoTGBBridgeConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.LongTensor) -> torch.Tensor:
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(torch.zeros_like(input_ids))
        # the word embeddings may be kept in fp32 in a half-precision model (T5 keeps `wo*` modules in fp32)
        return self.dropout(self.LayerNorm(embeddings.to(self.LayerNorm.weight.dtype)))


class VideoTGBFlowEmbeddings(nn.Module):
    """One vector per flow step, framed by learned BOS / EOS vectors, plus absolute positions.

    `(batch, steps, 2, S, S)` --Conv2d(patch)--> `(batch * steps, hidden, S/p, S/p)` --Linear over the patch grid-->
    `(batch, steps, hidden)`; sequence `[BOS, flow_1 .. flow_n, EOS, padding]` with EOS at position `n + 1` of each
    video; + position embedding -> LayerNorm -> dropout. The patch grid follows `flow_size` (the original fixed it to
    196 patches, i.e. 224x224 flow).
    """

    def __init__(self, config: VideoTGBBridgeConfig):
        super().__init__()
        grid = config.flow_size // config.flow_patch_size
        self.patch_projection = nn.Conv2d(2, config.hidden_size, config.flow_patch_size, stride=config.flow_patch_size)
        self.patch_pooling = nn.Linear(grid * grid, 1)
        self.bos_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.eos_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.flow_layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, flow: torch.Tensor, flow_lengths: torch.LongTensor) -> torch.Tensor:
        batch_size, steps = flow.shape[:2]
        patches = self.patch_projection(flow.flatten(0, 1).to(self.patch_projection.weight.dtype))
        steps_embeds = self.patch_pooling(patches.flatten(2)).squeeze(-1).view(batch_size, steps, -1)
        valid = torch.arange(steps, device=flow.device)[None, :] < flow_lengths[:, None]
        steps_embeds = steps_embeds * valid[..., None].to(steps_embeds.dtype)

        positions = torch.arange(steps + 2, device=flow.device)[None, :]
        is_eos = (positions == (flow_lengths[:, None] + 1))[..., None].to(steps_embeds.dtype)
        sequence = torch.cat(
            [
                self.bos_embedding.expand(batch_size, 1, -1),
                steps_embeds,
                steps_embeds.new_zeros(batch_size, 1, steps_embeds.shape[-1]),
            ],
            dim=1,
        )
        sequence = sequence * (1 - is_eos) + self.eos_embedding * is_eos
        sequence = sequence + self.position_embeddings(positions)
        return self.dropout(self.layer_norm(sequence))


class VideoTGBBridgeSelfAttention(nn.Module):
    """Multi-head attention with rotary queries and keys (values are not rotated); self- or cross-attention."""

    def __init__(self, config: VideoTGBBridgeConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def _heads(self, states: torch.Tensor) -> torch.Tensor:
        return states.view(*states.shape[:2], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        query_rotary: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        key_rotary: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention probabilities are returned only with `output_attentions`, which runs eager attention."""
        source = hidden_states if key_value_states is None else key_value_states
        key_rotary = query_rotary if key_rotary is None else key_rotary
        query = apply_rotary(self._heads(self.query(hidden_states)), query_rotary)
        key = apply_rotary(self._heads(self.key(source)), key_rotary)
        value = self._heads(self.value(source))
        attention_interface: Callable = eager_attention_forward
        if not output_attentions:
            attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, eager_attention_forward
            )
        output, weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout.p if self.training else 0.0,
            scaling=self.scaling,
        )
        return output.reshape(*hidden_states.shape[:2], -1), weights


class VideoTGBBridgeSelfOutput(nn.Module):
    def __init__(self, config: VideoTGBBridgeConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class VideoTGBBridgeAttention(nn.Module):
    def __init__(self, config: VideoTGBBridgeConfig):
        super().__init__()
        self.self = VideoTGBBridgeSelfAttention(config)
        self.output = VideoTGBBridgeSelfOutput(config)

    def forward(
        self,
        hidden_states,
        attention_mask,
        query_rotary,
        key_value_states=None,
        key_rotary=None,
        output_attentions=False,
    ):
        attended, weights = self.self(
            hidden_states, attention_mask, query_rotary, key_value_states, key_rotary, output_attentions
        )
        return self.output(attended, hidden_states), weights


class VideoTGBBridgeIntermediate(nn.Module):
    def __init__(self, config: VideoTGBBridgeConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class VideoTGBBridgeFeedForwardOutput(nn.Module):
    def __init__(self, config: VideoTGBBridgeConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class VideoTGBBridgeLayer(GradientCheckpointingLayer):
    """A post-LayerNorm BERT layer with rotary self-attention and, from `fusion_layer` on, cross-attention to the
    question (queries rotated with flow positions, keys with question positions). Submodule names follow BERT, so
    `bert-base-uncased` layers load directly."""

    def __init__(self, config: VideoTGBBridgeConfig, layer_index: int):
        super().__init__()
        self.attention = VideoTGBBridgeAttention(config)
        self.has_cross_attention = layer_index >= config.fusion_layer
        if self.has_cross_attention:
            self.crossattention = VideoTGBBridgeAttention(config)
        self.intermediate = VideoTGBBridgeIntermediate(config)
        self.output = VideoTGBBridgeFeedForwardOutput(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        flow_rotary: torch.Tensor,
        question_states: torch.Tensor,
        question_mask: torch.Tensor,
        question_rotary: torch.Tensor,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        hidden_states, self_weights = self.attention(
            hidden_states, attention_mask, flow_rotary, output_attentions=output_attentions
        )
        cross_weights = None
        if self.has_cross_attention:
            hidden_states, cross_weights = self.crossattention(
                hidden_states, question_mask, flow_rotary, question_states, question_rotary, output_attentions
            )
        hidden_states = self.output(self.intermediate(hidden_states), hidden_states)
        return hidden_states, self_weights, cross_weights


class VideoTGBBridgeEncoder(nn.Module):
    """The bridge's layers (a `ModuleDict` keyed by BERT layer number, so a `fusion` bridge holds only layers
    `fusion_layer..` under their original names) and its two rotary tables."""

    def __init__(self, config: VideoTGBBridgeConfig):
        super().__init__()
        head_dim = config.hidden_size // config.num_attention_heads
        self.flow_rotary = VideoTGBRotaryTable(config.max_position_embeddings, head_dim)
        self.question_rotary = VideoTGBRotaryTable(config.max_text_positions, head_dim)
        self.layer = nn.ModuleDict(
            {
                str(index): VideoTGBBridgeLayer(config, index)
                for index in range(config.first_layer, config.num_hidden_layers)
            }
        )


class VideoTGBBridgePreTrainedModel(SafetensorsOnlyMixin, PreTrainedModel):
    config_class = VideoTGBBridgeConfig
    base_model_prefix = "bridge"
    main_input_name = "flow"  # the first argument of `forward`; it sets the batch
    loadable_model_types = ("videotgb_bridge", "videotgb")  # a VideoTGB checkpoint's bridge loads on its own
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # modules that add up their submodules' outputs or use their own parameters directly stay on one device
    _no_split_modules = ["VideoTGBBridgeLayer", "VideoTGBFlowEmbeddings", "VideoTGBQuestionEmbeddings"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        config = self.config
        if isinstance(module, VideoTGBRotaryTable):
            if config.rotary_init == "sinusoidal":
                init.copy_(module.weight, sinusoidal_rotary_table(*module.weight.shape))
            else:
                init.normal_(module.weight, mean=0.0, std=config.initializer_range)
        elif isinstance(module, VideoTGBFlowEmbeddings):
            init.normal_(module.bos_embedding, mean=0.0, std=config.initializer_range)
            init.normal_(module.eos_embedding, mean=0.0, std=config.initializer_range)


class VideoTGBBridgeModel(VideoTGBBridgePreTrainedModel):
    r"""
    The Temporal Grounding Bridge: reads optical flow over a video's flow steps and the question, and returns
    start / end logits over the flow steps (see `docs/method.md`). Trainable and savable on its own.

    Example:

    ```python
    >>> import torch
    >>> from videotgb import VideoTGBBridgeConfig, VideoTGBBridgeModel

    >>> bridge = VideoTGBBridgeModel(VideoTGBBridgeConfig(
    ...     hidden_size=32, intermediate_size=64, num_hidden_layers=2, fusion_layer=1, num_attention_heads=4,
    ...     vocab_size=100, flow_size=32)).eval()
    >>> flow = torch.randn(2, 8, 2, 32, 32)
    >>> out = bridge(flow, flow_mask=torch.tensor([[1] * 8, [1] * 5 + [0] * 3]), input_ids=torch.tensor([[5, 6, 7]] * 2))
    >>> out.start_logits.shape
    torch.Size([2, 8])

    ```
    """

    def __init__(self, config: VideoTGBBridgeConfig):
        super().__init__(config)
        self.embeddings = VideoTGBQuestionEmbeddings(config)
        self.flow_embeddings = VideoTGBFlowEmbeddings(config)
        self.encoder = VideoTGBBridgeEncoder(config)
        self.span_head = nn.Linear(config.hidden_size, 2)
        self.gradient_checkpointing = False
        self.post_init()

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the bridge computes in (its flow embedding's); the question embeddings may be kept in fp32."""
        return self.flow_embeddings.patch_projection.weight.dtype

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def check_flow(self, flow: torch.Tensor, flow_mask: torch.Tensor | None) -> torch.LongTensor:
        """Validate `flow` `(batch, steps, 2, S, S)` and its prefix mask; return the `(batch,)` flow lengths."""
        size = self.config.flow_size
        if flow.dim() != 5 or flow.shape[2] != 2 or tuple(flow.shape[3:]) != (size, size):
            raise ValueError(
                f"flow must have shape (batch, steps, 2, {size}, {size}) for this bridge (flow_size={size}), "
                f"got {tuple(flow.shape)}"
            )
        if flow.shape[1] > self.config.max_flow_steps:
            raise ValueError(
                f"flow has {flow.shape[1]} steps but this bridge accepts at most {self.config.max_flow_steps} "
                "(max_position_embeddings - 2); sample fewer flow steps"
            )
        if flow_mask is None:
            return torch.full((flow.shape[0],), flow.shape[1], dtype=torch.long, device=flow.device)
        if tuple(flow_mask.shape) != tuple(flow.shape[:2]):
            raise ValueError(
                f"flow_mask must have shape (batch, steps) = {tuple(flow.shape[:2])}, got {tuple(flow_mask.shape)}"
            )
        mask = flow_mask.bool()
        lengths = mask.sum(-1)
        prefix = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths[:, None]
        if not torch.equal(prefix, mask):
            raise ValueError("flow_mask must mark a prefix of each row (valid steps first, then padding)")
        return lengths.long()

    def forward(
        self,
        flow: torch.Tensor,
        input_ids: torch.LongTensor,
        flow_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> VideoTGBBridgeOutput | tuple:
        r"""
        flow (`torch.FloatTensor` of shape `(batch_size, flow_steps, 2, flow_size, flow_size)`):
            Max-normalised optical flow of each video's flow steps (see `videotgb.optical_flow`).
        input_ids (`torch.LongTensor` of shape `(batch_size, question_length)`):
            Question tokens from the bridge tokenizer (BERT uncased).
        flow_mask (`torch.LongTensor` of shape `(batch_size, flow_steps)`, *optional*):
            1 for valid steps, 0 for padding (a prefix mask). A video with no flow (0 valid steps) gets logits that
            hold the dtype's minimum everywhere.
        attention_mask (`torch.LongTensor` of shape `(batch_size, question_length)`, *optional*):
            Question padding mask.
        output_attentions, output_hidden_states, return_dict (`bool`, *optional*):
            Default to the config's (`False`, `False`, `True` unless set); attentions are computed eagerly.
        """
        config = self.config
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else config.return_dict
        flow_lengths = self.check_flow(flow, flow_mask)
        if input_ids.dim() != 2 or input_ids.shape[0] != flow.shape[0]:
            raise ValueError(
                f"input_ids (bridge question) must have shape (batch={flow.shape[0]}, length), got {tuple(input_ids.shape)}"
            )
        if input_ids.shape[1] > self.config.max_text_positions:
            raise ValueError(
                f"bridge question has {input_ids.shape[1]} tokens, more than max_text_positions={self.config.max_text_positions}"
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        steps = flow.shape[1]
        hidden_states = self.flow_embeddings(flow, flow_lengths)
        question_states = self.embeddings(input_ids)
        dtype = hidden_states.dtype

        sequence_valid = torch.arange(steps + 2, device=flow.device)[None, :] <= (flow_lengths[:, None] + 1)
        min_value = torch.finfo(dtype).min
        self_mask = (~sequence_valid)[:, None, None, :].to(dtype) * min_value
        question_mask = (~attention_mask.bool())[:, None, None, :].to(dtype) * min_value
        flow_rotary = self.encoder.flow_rotary(steps + 2)
        question_rotary = self.encoder.question_rotary(input_ids.shape[1])

        all_hidden = (hidden_states,) if output_hidden_states else None
        all_self, all_cross = ((), ()) if output_attentions else (None, None)
        for layer in self.encoder.layer.values():
            hidden_states, self_weights, cross_weights = layer(
                hidden_states,
                self_mask,
                flow_rotary,
                question_states,
                question_mask,
                question_rotary,
                output_attentions=output_attentions,
            )
            if output_hidden_states:
                all_hidden += (hidden_states,)
            if output_attentions:
                all_self += (self_weights,)
                if cross_weights is not None:
                    all_cross += (cross_weights,)

        logits = self.span_head(hidden_states[:, 1 : steps + 1]).float()
        valid = torch.arange(steps, device=flow.device)[None, :] < flow_lengths[:, None]
        logits = logits.masked_fill(~valid[..., None], torch.finfo(logits.dtype).min)
        output = VideoTGBBridgeOutput(
            start_logits=logits[..., 0],
            end_logits=logits[..., 1],
            last_hidden_state=hidden_states,
            hidden_states=all_hidden,
            attentions=all_self,
            cross_attentions=all_cross,
            flow_lengths=flow_lengths,
        )
        return output if return_dict else output.to_tuple()

    def load_bert_weights(self, state_dict: dict[str, torch.Tensor]) -> list[str]:
        """Copy a BERT checkpoint's word / token-type embeddings, embedding LayerNorm and encoder layers into the
        bridge (the layers the bridge builds; `bert.` prefixes and old `gamma`/`beta` names are accepted).

        Returns the bridge parameters that stay newly initialised (cross-attention, flow embedding, span head,
        rotary tables). Raises ValueError when a weight the bridge expects from BERT is missing or mis-shaped.
        Under DeepSpeed ZeRO-3, where `from_pretrained` leaves each process a shard of every parameter, the
        bridge's parameters are gathered for the copy and rank 0's copy is shared out again.
        """
        renamed = {}
        for key, value in state_dict.items():
            key = (
                key.removeprefix("bert.")
                .replace("LayerNorm.gamma", "LayerNorm.weight")
                .replace("LayerNorm.beta", "LayerNorm.bias")
            )
            renamed[key] = value
        with self._gathered_parameters():
            return self._copy_bert_weights(renamed)

    @contextlib.contextmanager
    def _gathered_parameters(self) -> Iterator[None]:
        """Whole parameters inside (as without ZeRO-3); under ZeRO-3, rank 0's changes are kept on leaving."""
        if not is_deepspeed_zero3_enabled():
            yield
            return
        # by name: transformers refuses a remote-code file with an `import` statement of a module that is not
        # installed, and DeepSpeed is installed only where ZeRO-3 runs
        deepspeed = importlib.import_module("deepspeed")
        with deepspeed.zero.GatheredParameters(list(self.parameters()), modifier_rank=0):
            yield

    def _copy_bert_weights(self, renamed: dict[str, torch.Tensor]) -> list[str]:
        own = self.state_dict()
        from_bert = [
            key
            for key in own
            if (key.startswith("embeddings.") or key.startswith("encoder.layer.")) and ".crossattention." not in key
        ]
        missing = [key for key in from_bert if key not in renamed]
        if missing:
            raise ValueError(f"the BERT checkpoint lacks {len(missing)} weights the bridge needs, e.g. {missing[:3]}")
        mismatched = [key for key in from_bert if renamed[key].shape != own[key].shape]
        if mismatched:
            key = mismatched[0]
            raise ValueError(
                f"BERT weight {key} has shape {tuple(renamed[key].shape)} but the bridge expects {tuple(own[key].shape)}; "
                "build the bridge config from the BERT config"
            )
        self.load_state_dict({key: renamed[key] for key in from_bert}, strict=False)
        return [key for key in own if key not in from_bert]


# ----------------------------------------------------------------------------------------------------------------------
# VideoTGB
# ----------------------------------------------------------------------------------------------------------------------


class VideoTGBPreTrainedModel(SafetensorsOnlyMixin, PreTrainedModel):
    config_class = VideoTGBConfig
    base_model_prefix = "videotgb"
    # the first argument of `forward`, as for LLaVA-style models: every sample has text (frames are optional), and
    # Trainer counts input tokens in it
    main_input_name = "input_ids"
    loadable_model_types = ("videotgb",)
    input_modalities = ("video", "image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _keep_in_fp32_modules_strict = ["query_tokens"]
    _no_split_modules = [
        "InstructBlipAttention",
        "InstructBlipEncoderLayer",
        "InstructBlipQFormerLayer",
        "InstructBlipQFormerEmbeddings",
        "Blip2QFormerLayer",
    ]  # `post_init` adds those of the language model and of the bridge

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, VideoTGBForConditionalGeneration):
            init.normal_(module.query_tokens, mean=0.0, std=self.config.initializer_range)


class VideoTGBForConditionalGeneration(VideoTGBPreTrainedModel, GenerationMixin):
    r"""
    VideoTGB: a BLIP-2 / InstructBLIP vision-language model that answers questions about long videos by looking at
    only `num_keyframes` frames, chosen among `num_candidate_frames` by the Temporal Grounding Bridge from optical
    flow and the question. Registered for `AutoModel` and `AutoModelForImageTextToText`.

    Inputs come from `VideoTGBProcessor`. A batch may mix videos (candidate frames + flow), images (one frame, no
    flow) and text-only samples (no frames): samples without frames get masked visual tokens.

    Example:

    ```python
    >>> import torch
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
    >>> model = VideoTGBForConditionalGeneration(config).eval()
    >>> inputs = dict(
    ...     pixel_values=torch.randn(1, 8, 3, 28, 28), flow=torch.randn(1, 6, 2, 32, 32),
    ...     bridge_input_ids=torch.tensor([[5, 6, 7]]), qformer_input_ids=torch.tensor([[5, 6, 7]]),
    ...     input_ids=torch.tensor([[1, 10, 11, 12]]),
    ... )
    >>> out = model.generate(**inputs, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    >>> out.sequences.shape, out.keyframe_indices.shape
    (torch.Size([1, 3]), torch.Size([1, 2]))

    ```
    """

    def __init__(self, config: VideoTGBConfig):
        super().__init__(config)
        self.vision_model = InstructBlipVisionModel._from_config(config.vision_config)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.qformer_config.hidden_size))
        if config.qformer_text_input:
            self.qformer = InstructBlipQFormerModel._from_config(config.qformer_config)
        else:
            # a BLIP-2 Q-Former config built from `qformer_config`, with the attention implementation it was given
            self.qformer = Blip2QFormerModel._from_config(
                Blip2QFormerConfig(**self._qformer_fields(config)),
                attn_implementation=config.qformer_config._attn_implementation,
            )
        self.language_projection = nn.Linear(config.qformer_config.hidden_size, config.text_config.hidden_size)
        if config.use_decoder_only_language_model:
            self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        else:
            self.language_model = AutoModelForSeq2SeqLM.from_config(config.text_config)
        self.bridge = VideoTGBBridgeModel._from_config(config.bridge_config)
        self.post_init()

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's weights: the language model's.

        `PreTrainedModel.dtype` is the dtype of the first parameter, here `query_tokens`, which stays fp32 in
        half-precision models.
        """
        return self.language_model.dtype

    @property
    def qformer_dtype(self) -> torch.dtype:
        """The dtype the Q-Former computes in (its first LayerNorm's); its word embeddings may be kept in fp32."""
        layer_norm = self.qformer.embeddings.layernorm if self.config.qformer_text_input else self.qformer.layernorm
        return layer_norm.weight.dtype

    @staticmethod
    def _qformer_fields(config: VideoTGBConfig) -> dict:
        fields = config.qformer_config.to_dict()
        for key in ("model_type", "transformers_version", "architectures"):
            fields.pop(key, None)
        return fields

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`save_pretrained`, also mapping `AutoModelForImageTextToText` to this class in remote-code checkpoints."""
        if self._auto_class is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.setdefault(
                "AutoModelForImageTextToText", f"{type(self).__module__.rsplit('.', 1)[-1]}.{type(self).__name__}"
            )
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    # ---- embeddings, as transformers' BLIP-2 -------------------------------------------------------------------------

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.language_model.set_output_embeddings(new_embeddings)

    def get_encoder(self, modality: str | None = None):
        if modality is None:
            return self.language_model.get_encoder()
        return super().get_encoder(modality=modality)

    def get_decoder(self):
        return self.language_model.get_decoder()

    # ---- input checks --------------------------------------------------------------------------------------------------

    def _check_inputs(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.Tensor | None,
        pixel_values: torch.Tensor | None,
        frame_mask: torch.Tensor | None,
        keyframe_indices: torch.LongTensor | None,
    ) -> tuple[torch.Tensor | None, torch.LongTensor]:
        """Validate the text and visual inputs; return `pixel_values` as 5-D (or None) and the `(batch,)` frame
        counts."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(
                "pass either input_ids or inputs_embeds (the embedded text, without visual tokens), not both"
            )
        if input_ids is not None and (input_ids.dim() != 2 or input_ids.shape[0] == 0):
            raise ValueError(f"input_ids must have shape (batch >= 1, length), got {tuple(input_ids.shape)}")
        hidden_size = self.config.text_config.hidden_size
        if inputs_embeds is not None and (
            inputs_embeds.dim() != 3 or inputs_embeds.shape[0] == 0 or inputs_embeds.shape[-1] != hidden_size
        ):
            raise ValueError(
                f"inputs_embeds must have shape (batch >= 1, length, {hidden_size}), got {tuple(inputs_embeds.shape)}"
            )
        text = input_ids if input_ids is not None else inputs_embeds
        batch_size = text.shape[0]
        if pixel_values is None:
            if keyframe_indices is not None:
                raise ValueError("keyframe_indices were given without pixel_values")
            return None, torch.zeros(batch_size, dtype=torch.long, device=text.device)
        if pixel_values.dim() == 4:
            pixel_values = pixel_values[:, None]
        image_size = self.config.vision_config.image_size
        if pixel_values.dim() != 5 or pixel_values.shape[2] != 3 or pixel_values.shape[0] != batch_size:
            raise ValueError(
                f"pixel_values must have shape (batch={batch_size}, frames, 3, {image_size}, {image_size}) "
                f"(or (batch, 3, H, W) for images), got {tuple(pixel_values.shape)}"
            )
        if pixel_values.shape[1] == 0:
            raise ValueError("pixel_values has zero frames; pass pixel_values=None for text-only batches")
        if pixel_values.shape[1] > self.config.num_candidate_frames:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} frames per sample, more than num_candidate_frames="
                f"{self.config.num_candidate_frames}"
            )
        if frame_mask is None:
            frame_counts = torch.full(
                (batch_size,), pixel_values.shape[1], dtype=torch.long, device=pixel_values.device
            )
        else:
            if tuple(frame_mask.shape) != tuple(pixel_values.shape[:2]):
                raise ValueError(
                    f"frame_mask must have shape (batch, frames) = {tuple(pixel_values.shape[:2])}, got {tuple(frame_mask.shape)}"
                )
            mask = frame_mask.bool()
            frame_counts = mask.sum(-1).long()
            prefix = torch.arange(mask.shape[1], device=mask.device)[None, :] < frame_counts[:, None]
            if not torch.equal(prefix, mask):
                raise ValueError("frame_mask must mark a prefix of each row (valid frames first, then padding)")
        if keyframe_indices is not None:
            expected = (batch_size, self.config.num_keyframes)
            if tuple(keyframe_indices.shape) != expected:
                raise ValueError(
                    f"keyframe_indices must have shape (batch, num_keyframes) = {expected}, got {tuple(keyframe_indices.shape)}"
                )
            counts = frame_counts.to(keyframe_indices.device)[:, None]
            out_of_range = ((keyframe_indices < 0) | (keyframe_indices >= counts)) & (counts > 0)
            if out_of_range.any():
                row = int(out_of_range.any(-1).nonzero()[0])
                raise ValueError(
                    f"keyframe_indices[{row}] = {keyframe_indices[row].tolist()} is outside the sample's "
                    f"{int(frame_counts[row])} frames"
                )
        return pixel_values, frame_counts

    # ---- keyframe selection ----------------------------------------------------------------------------------------

    def select_keyframes(
        self,
        frame_counts: torch.LongTensor,
        flow: torch.Tensor | None = None,
        flow_mask: torch.Tensor | None = None,
        bridge_input_ids: torch.LongTensor | None = None,
        bridge_attention_mask: torch.Tensor | None = None,
        strategy: str | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.LongTensor, VideoTGBBridgeOutput | None]:
        """Choose `num_keyframes` frames per sample.

        Samples with flow get the bridge's choice (`keyframes.select_keyframes`); samples with frames but no flow
        (images, or videos given without flow) get the bin-midpoints of their frames; samples without frames get
        zeros (unused).

        Args:
            frame_counts: `(batch,)` valid frames per sample (`num_candidate_frames` for samples with flow).
            flow: `(batch, flow_steps, 2, S, S)` or None. flow_mask: `(batch, flow_steps)`.
            bridge_input_ids, bridge_attention_mask: `(batch, question_length)` bridge tokens.
            strategy: `"argmax"` or `"sample"`; defaults to the config's `train_selection` / `eval_selection`.

        Returns:
            `(batch, num_keyframes)` indices and the bridge output (None when no sample has flow).
        """
        config = self.config
        batch_size = frame_counts.shape[0]
        rows = [
            bin_midpoints(int(n), config.num_keyframes) if n > 0 else [0] * config.num_keyframes
            for n in frame_counts.tolist()
        ]
        keyframes = torch.tensor(rows, dtype=torch.long, device=frame_counts.device)
        if flow is None:
            return keyframes, None
        bridge_output = self.run_bridge(flow, flow_mask, bridge_input_ids, bridge_attention_mask, batch_size)
        flow_lengths = bridge_output.flow_lengths.to(frame_counts.device)
        with_flow = flow_lengths > 0
        if with_flow.any():
            wrong = with_flow & (frame_counts != config.num_candidate_frames)
            if wrong.any():
                row = int(wrong.nonzero()[0])
                raise ValueError(
                    f"sample {row} has flow but {int(frame_counts[row])} frames; a video needs exactly "
                    f"num_candidate_frames={config.num_candidate_frames} candidate frames"
                )
            strategy = strategy or (config.train_selection if self.training else config.eval_selection)
            chosen = select_keyframes(
                bridge_output.start_logits[with_flow],
                bridge_output.end_logits[with_flow],
                flow_lengths[with_flow],
                num_candidates=config.num_candidate_frames,
                num_keyframes=config.num_keyframes,
                num_spans=config.num_spans,
                strategy=strategy,
                end_inclusive=config.span_end_inclusive,
                generator=generator,
            )
            keyframes[with_flow.to(keyframes.device)] = chosen.to(keyframes.device)
        return keyframes, bridge_output

    def run_bridge(
        self,
        flow: torch.Tensor,
        flow_mask: torch.Tensor | None,
        bridge_input_ids: torch.LongTensor | None,
        bridge_attention_mask: torch.Tensor | None,
        batch_size: int,
    ) -> VideoTGBBridgeOutput:
        if flow.shape[0] != batch_size:
            raise ValueError(f"flow has batch size {flow.shape[0]} but the text has {batch_size}")
        if bridge_input_ids is None:
            raise ValueError("bridge_input_ids (the question in the bridge tokenizer) are required with flow")
        return self.bridge(flow, bridge_input_ids, flow_mask=flow_mask, attention_mask=bridge_attention_mask)

    # ---- visual tokens ---------------------------------------------------------------------------------------------

    def get_video_features(
        self,
        pixel_values: torch.Tensor,
        keyframe_indices: torch.LongTensor,
        frame_counts: torch.LongTensor,
        qformer_input_ids: torch.LongTensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.LongTensor]:
        """Visual tokens of the keyframes, in the language model's width.

        Frames are independent through the ViT and the Q-Former (which also reads the instruction when
        `qformer_text_input`); a frame picked several times is encoded once. Their query outputs are concatenated in
        time order (`concat`: `num_keyframes * num_query_tokens` tokens) or averaged (`mean`: `num_query_tokens`).

        Args:
            pixel_values: `(batch, frames, 3, H, W)`.
            keyframe_indices: `(batch, num_keyframes)`.
            frame_counts: `(batch,)`; samples with 0 frames get zero tokens and a zero mask.
            qformer_input_ids, qformer_attention_mask: `(batch, instruction_length)` Q-Former tokens.

        Returns:
            `(batch, num_visual_tokens, text_hidden)` features and the `(batch, num_visual_tokens)` mask.
        """
        config = self.config
        batch_size, num_frames = pixel_values.shape[:2]
        num_visual = config.num_visual_tokens
        # devices come from the tensors computed: with accelerate offload, weights are on the `meta` device
        shape = (batch_size, num_visual, config.text_config.hidden_size)
        has_frames = frame_counts > 0
        visual_mask = has_frames[:, None].long().expand(-1, num_visual).contiguous()
        if not has_frames.any():
            dtype = self.language_projection.weight.dtype
            return torch.zeros(shape, dtype=dtype, device=frame_counts.device), visual_mask

        rows = has_frames.nonzero().squeeze(-1).to(keyframe_indices.device)
        flat = rows[:, None] * num_frames + keyframe_indices[rows]
        unique, inverse = torch.unique(flat, return_inverse=True)
        frames = pixel_values.flatten(0, 1)[unique.to(pixel_values.device)]
        vision_dtype = self.vision_model.embeddings.patch_embedding.weight.dtype
        image_embeds = self.vision_model(pixel_values=frames.to(vision_dtype)).last_hidden_state

        image_embeds = image_embeds.to(self.qformer_dtype)
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        query_tokens = self.query_tokens.to(image_embeds.device, image_embeds.dtype)
        query_tokens = query_tokens.expand(image_embeds.shape[0], -1, -1)
        if config.qformer_text_input:
            if qformer_input_ids is None:
                raise ValueError("qformer_input_ids (the instruction in the Q-Former tokenizer) are required")
            owner = (unique // num_frames).to(qformer_input_ids.device)
            instruction_ids = qformer_input_ids[owner]
            instruction_mask = (
                torch.ones_like(instruction_ids) if qformer_attention_mask is None else qformer_attention_mask[owner]
            )
            query_mask = torch.ones(query_tokens.shape[:-1], dtype=torch.long, device=image_embeds.device)
            qformer_output = self.qformer(
                input_ids=instruction_ids.to(image_embeds.device),
                attention_mask=torch.cat([query_mask, instruction_mask.to(image_embeds.device)], dim=1),
                query_embeds=query_tokens,
                encoder_hidden_states=image_embeds,
                encoder_attention_mask=image_mask,
            )
        else:
            qformer_output = self.qformer(
                query_embeds=query_tokens, encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask
            )
        query_output = qformer_output.last_hidden_state[:, : config.num_query_tokens]
        frame_features = self.language_projection(query_output.to(self.language_projection.weight.dtype))

        per_sample = frame_features[inverse.to(frame_features.device)]  # (rows, K, Q, D)
        if config.frame_aggregation == "concat":
            per_sample = per_sample.flatten(1, 2)
        else:
            per_sample = per_sample.mean(dim=1)
        features = per_sample.new_zeros(shape).index_put((rows.to(per_sample.device),), per_sample)
        return features, visual_mask

    @contextlib.contextmanager
    def _own_parameters_gathered(self) -> Iterator[None]:
        """This module's own parameters (`query_tokens`) whole inside, also under ZeRO-3: DeepSpeed gathers a
        module's parameters when its forward runs, and `generate` runs the forward of the submodules only. Under
        ZeRO-3 a collective: every rank enters it (as every rank calls `generate`)."""
        own = [parameter for parameter in self.parameters(recurse=False) if hasattr(parameter, "ds_id")]
        if not own:  # not partitioned by ZeRO-3
            yield
            return
        # by name: transformers refuses a remote-code file with an `import` statement of a module that is not
        # installed, and DeepSpeed is installed only where ZeRO-3 runs
        deepspeed = importlib.import_module("deepspeed")
        with deepspeed.zero.GatheredParameters(own):
            yield

    def runs_every_module(self, synced_gpus: bool | None = None) -> bool:
        """Whether a forward pass must run every module whatever its batch holds: `synced_gpus` when given, else
        whether several processes share the parameters under DeepSpeed ZeRO-3 or FSDP (the test of transformers'
        `generate`). There a module's parameters are gathered from all ranks when it runs, so a rank that skipped
        the vision tower on a text-only batch would wait forever for the others."""
        if synced_gpus is not None:
            return synced_gpus
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        several = distributed and torch.distributed.get_world_size() > 1
        return several and (is_deepspeed_zero3_enabled() or is_fsdp_managed_module(self))

    def _bridge_sum(self, bridge_output: VideoTGBBridgeOutput | None, device: torch.device) -> torch.Tensor:
        """Sum of the bridge's span logits over valid flow steps, `()` float32; with no bridge output, of the bridge
        run on a placeholder: one step of zero flow and a one-token question (id 0, valid in every vocabulary)."""
        if bridge_output is None:
            size = self.config.bridge_config.flow_size
            # float32, cast by the bridge: reading its dtype here would gather a weight on this rank alone (ZeRO-3)
            flow = torch.zeros(1, 1, 2, size, size, device=device)
            token = torch.zeros(1, 1, dtype=torch.long, device=device)
            bridge_output = self.run_bridge(flow, torch.ones_like(token), token, torch.ones_like(token), 1)
        logits = bridge_output.start_logits.float() + bridge_output.end_logits.float()
        steps = torch.arange(logits.shape[1], device=logits.device)
        padded = steps[None, :] >= bridge_output.flow_lengths.to(logits.device)[:, None]
        return logits.masked_fill(padded, 0).sum()  # padded steps hold the dtype's minimum

    def _placeholder_visual_sum(self, device: torch.device) -> torch.Tensor:
        """Sum of the visual tokens of a placeholder sample, `()` float32: one black candidate frame picked
        `num_keyframes` times, with a one-token instruction (id 0), through `get_video_features`."""
        size = self.config.vision_config.image_size
        frame = torch.zeros(1, 1, 3, size, size, device=device)
        keyframes = torch.zeros(1, self.config.num_keyframes, dtype=torch.long, device=device)
        token = torch.zeros(1, 1, dtype=torch.long, device=device)
        one = torch.ones(1, dtype=torch.long, device=device)
        features, _ = self.get_video_features(frame, keyframes, one, token, torch.ones_like(token))
        return features.float().sum()

    def _encode(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        labels: torch.LongTensor | None,
        pixel_values: torch.Tensor | None,
        frame_mask: torch.Tensor | None,
        flow: torch.Tensor | None,
        flow_mask: torch.Tensor | None,
        bridge_input_ids: torch.LongTensor | None,
        bridge_attention_mask: torch.Tensor | None,
        qformer_input_ids: torch.LongTensor | None,
        qformer_attention_mask: torch.Tensor | None,
        keyframe_indices: torch.LongTensor | None,
        need_bridge: bool,
        selection_strategy: str | None = None,
        synced_gpus: bool | None = None,
    ) -> dict:
        """Shared by `forward` and `generate`: select keyframes, encode them, and build the LM's input embeddings
        (the visual tokens merged with the text's embeddings, `inputs_embeds` or those of `input_ids`).

        With `synced_gpus` (see `forward`), the bridge and the visual modules run on placeholders when the batch
        gives them nothing, at the point where they would run on real inputs (every rank must run, and gather the
        parameters of, the same modules in the same order), and what the loss would not read (placeholders, a
        bridge that only selected keyframes) enters the visual tokens times zero."""
        pixel_values, frame_counts = self._check_inputs(
            input_ids, inputs_embeds, pixel_values, frame_mask, keyframe_indices
        )
        batch_size = frame_counts.shape[0]
        if flow is not None and pixel_values is None:
            raise ValueError("flow was given without pixel_values (the candidate frames it selects from)")
        device = (input_ids if inputs_embeds is None else inputs_embeds).device

        bridge_output = None
        if keyframe_indices is None:
            keyframe_indices, bridge_output = self.select_keyframes(
                frame_counts, flow, flow_mask, bridge_input_ids, bridge_attention_mask, strategy=selection_strategy
            )
        elif need_bridge and flow is not None:
            bridge_output = self.run_bridge(flow, flow_mask, bridge_input_ids, bridge_attention_mask, batch_size)
        synced = self.runs_every_module(synced_gpus)
        outside_the_loss = [self._bridge_sum(bridge_output, device)] if synced else []

        text_embeds = self.get_input_embeddings()(input_ids) if inputs_embeds is None else inputs_embeds
        if attention_mask is None:
            attention_mask = torch.ones(text_embeds.shape[:2], dtype=torch.long, device=text_embeds.device)
        if pixel_values is None:
            visual = text_embeds.new_zeros(batch_size, self.config.num_visual_tokens, text_embeds.shape[-1])
            visual_mask = torch.zeros(visual.shape[:2], dtype=torch.long, device=text_embeds.device)
            keyframe_indices = torch.zeros(
                batch_size, self.config.num_keyframes, dtype=torch.long, device=text_embeds.device
            )
        else:
            visual, visual_mask = self.get_video_features(
                pixel_values, keyframe_indices, frame_counts, qformer_input_ids, qformer_attention_mask
            )
        if synced and not frame_counts.any():
            outside_the_loss.append(self._placeholder_visual_sum(device))
        visual = visual.to(text_embeds.device, text_embeds.dtype)
        if outside_the_loss:  # zero in value; in the graph, so that those modules get (zero) gradients
            visual = visual + (sum(outside_the_loss) * 0).to(visual)
        visual_mask = visual_mask.to(attention_mask.device)
        decoder_labels = None
        if self.config.use_decoder_only_language_model:
            inputs_embeds, merged_mask, merged_labels = merge_visual_prefix(
                visual, visual_mask, text_embeds, attention_mask, labels
            )
        else:
            inputs_embeds, merged_mask, _ = merge_visual_prefix(visual, visual_mask, text_embeds, attention_mask)
            merged_labels, decoder_labels = None, labels
        return {
            "inputs_embeds": inputs_embeds,
            "attention_mask": merged_mask,
            "labels": merged_labels,
            "decoder_labels": decoder_labels,
            "keyframe_indices": keyframe_indices,
            "visual_attention_mask": visual_mask,
            "bridge_output": bridge_output,
        }

    # ---- forward / generate ----------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        frame_mask: torch.Tensor | None = None,
        flow: torch.FloatTensor | None = None,
        flow_mask: torch.Tensor | None = None,
        bridge_input_ids: torch.LongTensor | None = None,
        bridge_attention_mask: torch.Tensor | None = None,
        qformer_input_ids: torch.LongTensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        keyframe_indices: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        span_targets: torch.FloatTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        return_dict: bool | None = None,
        synced_gpus: bool | None = None,
        **kwargs,
    ) -> VideoTGBOutput | tuple:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, length)`):
            Prompt (and, for a causal LM in training, answer) tokens of the language model, right-padded for
            training, left-padded for batched generation. Give either `input_ids` or `inputs_embeds`.
        attention_mask (`torch.LongTensor` of shape `(batch_size, length)`, *optional*):
            Padding mask of `input_ids` (or `inputs_embeds`).
        pixel_values (`torch.FloatTensor` of shape `(batch_size, frames, 3, height, width)`, *optional*):
            Candidate frames (`num_candidate_frames` for videos, 1 for images), CLIP-normalised. `None` for a
            text-only batch.
        frame_mask (`torch.LongTensor` of shape `(batch_size, frames)`, *optional*):
            1 for real frames, 0 for padding (a prefix mask); a row of zeros is a text-only sample.
        flow (`torch.FloatTensor` of shape `(batch_size, flow_steps, 2, flow_size, flow_size)`, *optional*):
            Max-normalised optical flow; without it keyframes are the frames' bin-midpoints.
        flow_mask (`torch.LongTensor` of shape `(batch_size, flow_steps)`, *optional*):
            1 for valid flow steps (a prefix mask); a row of zeros is a sample without flow (e.g. an image).
        bridge_input_ids, bridge_attention_mask (`torch.LongTensor` of shape `(batch_size, question_length)`):
            The question in the bridge's tokenizer; required with `flow`.
        qformer_input_ids, qformer_attention_mask (`torch.LongTensor` of shape `(batch_size, instruction_length)`):
            The instruction in the Q-Former's tokenizer; required when `config.qformer_text_input`.
        keyframe_indices (`torch.LongTensor` of shape `(batch_size, num_keyframes)`, *optional*):
            Frames to use instead of the bridge's choice (uniform, oracle or precomputed keyframes).
        labels (`torch.LongTensor`, *optional*):
            Causal LM: `(batch_size, length)` aligned with `input_ids`, `-100` on prompt and padding. Seq2seq LM:
            the target tokens, as for the LM itself.
        span_targets (`torch.FloatTensor` of shape `(batch_size, 2)`, *optional*):
            Target (start, end) of the relevant span as ratios of the video's flow steps in [0, 1]; NaN or negative
            rows are ignored (images, text-only samples). Gives `span_loss`; needs `flow`, except when no row holds
            a target (a batch of images and text), which gives no `span_loss`.
        inputs_embeds (`torch.FloatTensor` of shape `(batch_size, length, text_hidden_size)`, *optional*):
            The text's embeddings instead of `input_ids` (e.g. `model.get_input_embeddings()(input_ids)`); the visual
            tokens are merged with them as with those of `input_ids`.
        synced_gpus (`bool`, *optional*):
            Run the vision tower, Q-Former, projection and bridge whatever the batch holds (on placeholder inputs
            when it has no frame or no flow) and add what the loss would not read times zero: outputs, loss and
            gradients are unchanged, and the same parameters get a gradient (zero where unused) for every batch.
            Under DeepSpeed ZeRO-3 or FSDP every process must run the same modules in every step (a module's sharded
            parameters are gathered when it runs), and gradient reduction needs the same parameters on every rank;
            `videotgb-train` always sets it. Defaults to `runs_every_module()`: on when several processes run under
            ZeRO-3 or FSDP.
        kwargs:
            Further arguments of the language model's forward (`use_cache`, `output_hidden_states`, ...).
        """
        _refuse_arguments(kwargs, _ARGUMENTS_FORWARD_REFUSES)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        encoded = self._encode(
            input_ids,
            inputs_embeds,
            attention_mask,
            labels if self.config.use_decoder_only_language_model else None,
            pixel_values,
            frame_mask,
            flow,
            flow_mask,
            bridge_input_ids,
            bridge_attention_mask,
            qformer_input_ids,
            qformer_attention_mask,
            keyframe_indices,
            need_bridge=span_targets is not None,
            synced_gpus=synced_gpus,
        )
        lm_kwargs = {**kwargs, "inputs_embeds": encoded["inputs_embeds"], "attention_mask": encoded["attention_mask"]}
        if self.config.use_decoder_only_language_model:
            lm_kwargs["labels"] = encoded["labels"]
        else:
            lm_kwargs.update(
                labels=labels, decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask
            )
        lm_outputs = self.language_model(**lm_kwargs, return_dict=True)

        bridge_output = encoded["bridge_output"]
        span_loss = None
        if span_targets is not None:
            if tuple(span_targets.shape) != (encoded["inputs_embeds"].shape[0], 2):
                raise ValueError(f"span_targets must have shape (batch, 2), got {tuple(span_targets.shape)}")
            if bridge_output is not None:
                positions = span_targets_to_positions(span_targets, bridge_output.flow_lengths).to(
                    bridge_output.start_logits.device
                )
                span_loss = span_cross_entropy(
                    bridge_output.start_logits, bridge_output.end_logits, positions[:, 0], positions[:, 1]
                )
            elif not untargeted_rows(span_targets).all():  # no flow is fine for a batch of images and text only
                rows = (~untargeted_rows(span_targets)).nonzero().flatten().tolist()
                raise ValueError(
                    f"span_targets rows {rows} hold targets, which need flow (and bridge_input_ids) to compute the "
                    "span loss"
                )
        lm_loss = lm_outputs.loss
        loss = None
        if lm_loss is not None or span_loss is not None:
            loss = 0
            if lm_loss is not None:
                loss = loss + lm_loss
            if span_loss is not None:
                loss = loss + self.config.span_loss_weight * span_loss.to(lm_outputs.logits.device)

        output = VideoTGBOutput(
            loss=loss,
            lm_loss=lm_loss,
            span_loss=span_loss,
            logits=lm_outputs.logits,
            start_logits=None if bridge_output is None else bridge_output.start_logits,
            end_logits=None if bridge_output is None else bridge_output.end_logits,
            keyframe_indices=encoded["keyframe_indices"],
            visual_attention_mask=encoded["visual_attention_mask"],
            language_model_outputs=lm_outputs,
        )
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        frame_mask: torch.Tensor | None = None,
        flow: torch.FloatTensor | None = None,
        flow_mask: torch.Tensor | None = None,
        bridge_input_ids: torch.LongTensor | None = None,
        bridge_attention_mask: torch.Tensor | None = None,
        qformer_input_ids: torch.LongTensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        keyframe_indices: torch.LongTensor | None = None,
        selection_strategy: str | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        **generate_kwargs,
    ):
        r"""
        Answer: select keyframes, encode them once, and let the language model generate from the embeddings.

        Takes the inputs of `forward` (from `VideoTGBProcessor`, left-padded for batches) and any argument of
        `GenerationMixin.generate` (`generation_config`, `max_new_tokens`, `streamer`, ...). Returns only the new
        tokens (the prompt is passed as embeddings), as `(batch, new_tokens)`; with `return_dict_in_generate=True`
        the output also carries `keyframe_indices` `(batch, num_keyframes)`.

        selection_strategy (`str`, *optional*): `"argmax"` or `"sample"` for this call; defaults to the config's
            `eval_selection` (the model is expected in eval mode).
        inputs_embeds (`torch.FloatTensor` of shape `(batch_size, length, text_hidden_size)`, *optional*): the
            prompt's embeddings instead of `input_ids`, as in `forward`.
        synced_gpus (`bool`, *optional*): as in `forward` for the visual part, and passed on to the language model's
            `generate`; both default to on when several processes run under ZeRO-3 or FSDP.
        """
        _refuse_arguments(generate_kwargs, _ARGUMENTS_FORWARD_REFUSES | _ARGUMENTS_GENERATE_REFUSES)
        if hasattr(self, "hf_device_map") and hasattr(self.language_model, "_hf_hook"):
            self.language_model._hf_hook.io_same_device = True
        with self._own_parameters_gathered():
            encoded = self._encode(
                input_ids,
                inputs_embeds,
                attention_mask,
                None,
                pixel_values,
                frame_mask,
                flow,
                flow_mask,
                bridge_input_ids,
                bridge_attention_mask,
                qformer_input_ids,
                qformer_attention_mask,
                keyframe_indices,
                need_bridge=False,
                selection_strategy=selection_strategy,
                synced_gpus=generate_kwargs.get("synced_gpus"),
            )
        generation_config = copy.deepcopy(generate_kwargs.pop("generation_config", None) or self.generation_config)
        model_kwargs = generation_config.update(**generate_kwargs)
        outputs = self.language_model.generate(
            inputs_embeds=encoded["inputs_embeds"],
            attention_mask=encoded["attention_mask"],
            generation_config=generation_config,
            **model_kwargs,
        )
        if isinstance(outputs, ModelOutput):
            outputs["keyframe_indices"] = encoded["keyframe_indices"]
        return outputs

    # ---- building from released parts -----------------------------------------------------------------------------

    @classmethod
    def from_blip_and_bert(
        cls,
        vlm_name_or_path: str,
        bert_name_or_path: str,
        bridge_overrides: dict | None = None,
        hub_kwargs: dict | None = None,
        **config_and_loading_kwargs,
    ) -> VideoTGBForConditionalGeneration:
        r"""
        Build a VideoTGB ready for stage training from a BLIP-2 / InstructBLIP checkpoint and a BERT checkpoint.

        The vision tower, query tokens, Q-Former, projection and language model come from `vlm_name_or_path` (a
        folder or a Hub id of `Blip2ForConditionalGeneration`, `InstructBlipForConditionalGeneration` or
        `InstructBlipVideoForConditionalGeneration`); the bridge's question embeddings and encoder layers come from
        `bert_name_or_path` (e.g. `bert-base-uncased`); cross-attention, flow embedding, span head and rotary tables
        are newly initialised. A load report (a warning) names the weights taken from each checkpoint and the new ones;
        transformers' own report of the first step, which would call the BERT weights missing, is held back.

        Args:
            vlm_name_or_path: BLIP-2 / InstructBLIP checkpoint.
            bert_name_or_path: BERT checkpoint with safetensors weights.
            bridge_overrides: bridge-config fields on top of the BERT architecture (`fusion_layer` defaults to half
                the layers, `mode`, `flow_size`, `flow_patch_size`, `flow_estimator`, `rotary_init`, ...).
            hub_kwargs: `revision`, `token`, `cache_dir`, ... for both downloads.
            config_and_loading_kwargs: `VideoTGBConfig` fields (`num_keyframes`, `frame_aggregation`, ...) and
                `from_pretrained` arguments (`dtype`, `device_map`, ...). Weights are read from safetensors only;
                for a BLIP checkpoint (revision) published only as pickles pass `use_safetensors=False` explicitly.

        Example:

        ```python
        >>> model = VideoTGBForConditionalGeneration.from_blip_and_bert(
        ...     "Salesforce/instructblip-vicuna-7b", "bert-base-uncased", dtype=torch.bfloat16
        ... )  # doctest: +SKIP
        ```
        """
        hub_kwargs = dict(hub_kwargs or {})
        vlm_config = AutoConfig.from_pretrained(vlm_name_or_path, **hub_kwargs)
        bert_config = AutoConfig.from_pretrained(bert_name_or_path, **hub_kwargs)
        bridge_fields = {
            name: getattr(bert_config, name)
            for name in (
                "vocab_size",
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "hidden_act",
                "hidden_dropout_prob",
                "attention_probs_dropout_prob",
                "layer_norm_eps",
                "type_vocab_size",
                "pad_token_id",
                "initializer_range",
            )
            if hasattr(bert_config, name)
        }
        bridge_fields["fusion_layer"] = bert_config.num_hidden_layers // 2
        bridge_fields.update(bridge_overrides or {})

        own_fields = VideoTGBConfig.__annotations__  # VideoTGB's fields, not inherited ones such as `dtype`
        config_fields = {
            key: config_and_loading_kwargs.pop(key) for key in list(config_and_loading_kwargs) if key in own_fields
        }
        config = config_from_vlm(vlm_config, bridge_fields, vlm_name_or_path, **config_fields)
        # transformers would report every bridge weight as missing, even those copied from BERT below
        with held_back_load_report():
            model, loading_info = cls.from_pretrained(
                vlm_name_or_path, config=config, output_loading_info=True, **hub_kwargs, **config_and_loading_kwargs
            )
        outside_bridge = [key for key in loading_info["missing_keys"] if not key.startswith("bridge.")]
        if outside_bridge:
            raise ValueError(
                f"{vlm_name_or_path} lacks {len(outside_bridge)} weights of the vision-language part, e.g. {outside_bridge[:3]}"
            )
        if loading_info["unexpected_keys"]:
            logger.warning("ignored weights of %s: %s", vlm_name_or_path, sorted(loading_info["unexpected_keys"])[:10])
        bert_weights = load_safetensors_state_dict(bert_name_or_path, **hub_kwargs)
        new_keys = model.bridge.load_bert_weights(bert_weights)  # `load_state_dict` casts to each weight's dtype

        all_keys = list(model.state_dict())
        new = {f"bridge.{key}" for key in new_keys}
        from_bert = {key for key in all_keys if key.startswith("bridge.") and key not in new}
        from_vlm = {key for key in all_keys if not key.startswith("bridge.")}
        logger.warning(
            "%s.from_blip_and_bert load report:\n- from %s: %d weights (%s)\n- from %s: %d weights (%s)\n"
            "- newly initialised, to be trained: %d weights (%s)",
            cls.__name__,
            vlm_name_or_path,
            len(from_vlm),
            summarize_keys(from_vlm, all_keys),
            bert_name_or_path,
            len(from_bert),
            summarize_keys(from_bert, all_keys),
            len(new),
            summarize_keys(new, all_keys),
        )
        return model


VideoTGBModel = VideoTGBForConditionalGeneration
"""Alias: `AutoModel` and `AutoModelForImageTextToText` both resolve to `VideoTGBForConditionalGeneration`."""

__all__ = [
    "VideoTGBBridgeModel",
    "VideoTGBBridgeOutput",
    "VideoTGBBridgePreTrainedModel",
    "VideoTGBForConditionalGeneration",
    "VideoTGBModel",
    "VideoTGBOutput",
    "VideoTGBPreTrainedModel",
    "WrongModelTypeError",
    "config_from_vlm",
    "merge_visual_prefix",
]
