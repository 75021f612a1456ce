"""Convert the original VideoTGB release (`ColorfulAI/VideoTGB-Chat`, a PyTorch state dict) into a VideoTGB
checkpoint folder that loads with `AutoModel` / `AutoProcessor` and `trust_remote_code=True`.

    videotgb convert-original --checkpoint VideoTGB-Chat.ckpt --out videotgb-7b-chat

The release is the state dict of the original training module, flat or wrapped in a PyTorch Lightning checkpoint
under `state_dict`, with three prefixes:

- `model.*`: InstructBLIP-Vicuna-7B under transformers' names (`vision_model`, `query_tokens`, `qformer`,
  `language_projection`, `language_model`), plus an unused `temporal_projection` (dropped). LoRA weights of the
  language model (`language_model.base_model.model.*.lora_A/lora_B.default`) are merged into its weights or kept as
  a peft adapter.
- `temporal_encoder.*`: the Temporal Grounding Bridge, renamed to `bridge.*` (`ORIGINAL_BRIDGE_NAMES`). Its two
  rotary tables are the original's random ones, kept exactly (`rotary_init="normal"` records where they came from).
- `of_extractor.*`: RAFT-large in the princeton-vl naming, renamed to torchvision's `raft_large` and saved as
  `raft_large.safetensors` in the output folder, which the processor's flow config names.

The converted bridge runs in mode `multi_modal` (all 12 layers), the mode of the release's evaluation code
(`eval/utils/model.py`), which produced the published scores; the original trained the bridge in `fusion` mode
(layers 6-11 only), which `bridge_mode="fusion"` selects (layers 0-5 are then dropped). Visual tokens are averaged
over the K = 4 keyframes (`frame_aggregation="mean"`), as in that evaluation code.

Every source key is converted or listed in the report (`conversion_report.json`), every target weight is filled or
listed; anything unexpected is an error unless `allow_missing` names it. Reading the Lightning form needs pickle
(`torch.load(weights_only=False)`), which can run arbitrary code: only with `trust_pickle=True`
(`--trust-pickle`). This module is not part of a checkpoint's remote code.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers.utils import logging

logger = logging.get_logger(__name__)

DEFAULT_BASE_VLM = "Salesforce/instructblip-vicuna-7b"
DEFAULT_BERT = "bert-base-uncased"
RELEASE_MODE = "multi_modal"
RELEASE_FRAME_AGGREGATION = "mean"
RELEASE_NUM_CANDIDATE_FRAMES = 32
RELEASE_NUM_KEYFRAMES = 4
RELEASE_FLOW_SIZE = 224
# The release's LoRA (peft LoraConfig in the original code): r 8, alpha 32, dropout 0.1; r is read from the weights.
RELEASE_LORA_ALPHA = 32
RELEASE_LORA_DROPOUT = 0.1
RAFT_WEIGHTS_FILE = "raft_large.safetensors"
REPORT_FILE = "conversion_report.json"
ADAPTER_FOLDER = "lora_adapter"
LORA_CHOICES = ("merge", "keep")

ORIGINAL_BRIDGE_NAMES: tuple[tuple[str, str], ...] = (
    ("embeddings.word_embeddings.", "embeddings.word_embeddings."),
    ("embeddings.token_type_embeddings.", "embeddings.token_type_embeddings."),
    ("embeddings.LayerNorm.", "embeddings.LayerNorm."),
    ("temporal_embeddings.projection.", "flow_embeddings.patch_projection."),
    ("temporal_embeddings.fc.", "flow_embeddings.patch_pooling."),
    ("temporal_embeddings.bos", "flow_embeddings.bos_embedding"),
    ("temporal_embeddings.eos", "flow_embeddings.eos_embedding"),
    ("temporal_embeddings.frame_pos_embed.", "flow_embeddings.position_embeddings."),
    ("temporal_embeddings.ln.", "flow_embeddings.layer_norm."),
    ("encoder.embed_positions.weight", "encoder.flow_rotary.weight"),
    ("encoder.c_embed_positions.weight", "encoder.question_rotary.weight"),
    ("mrc_head.", "span_head."),
)
"""Original bridge names (under `temporal_encoder.`) -> ours (under `bridge.`), by prefix; `encoder.layer.N.*` keeps
its names. `embed_positions` rotates the flow sequence and `c_embed_positions` the question in the original code."""

_DROPPED_BY_DESIGN: tuple[tuple[str, str], ...] = (
    (r"^model\.temporal_projection\.", "unused by the original model"),
    (r"^temporal_encoder\.embeddings\.position_embeddings\.", "never read by the original bridge's forward"),
    (r"\.position_ids$", "buffer of positions 0..n, recomputed"),
    (r"\.rotary_emb\.inv_freq$", "buffer of rotary frequencies, recomputed"),
)

_RAFT_NAMES: tuple[tuple[str, str], ...] = (
    (r"^fnet\.", "feature_encoder."),
    (r"^cnet\.", "context_encoder."),
    (r"^(\w+_encoder)\.conv1\.", r"\1.convnormrelu.0."),
    (r"^(\w+_encoder)\.norm1\.", r"\1.convnormrelu.1."),
    (r"^(\w+_encoder)\.conv2\.", r"\1.conv."),
    (r"\.(layer\d+\.\d+)\.conv([12])\.", r".\1.convnormrelu\2.0."),
    (r"\.(layer\d+\.\d+)\.norm([12])\.", r".\1.convnormrelu\2.1."),
    (r"^update_block\.encoder\.convc([12])\.", r"update_block.motion_encoder.convcorr\1.0."),
    (r"^update_block\.encoder\.convf([12])\.", r"update_block.motion_encoder.convflow\1.0."),
    (r"^update_block\.encoder\.conv\.", "update_block.motion_encoder.conv.0."),
    (r"^update_block\.gru\.conv([zrq])([12])\.", r"update_block.recurrent_block.convgru\2.conv\1."),
    (r"^update_block\.mask\.0\.", "mask_predictor.convrelu.0."),
    (r"^update_block\.mask\.2\.", "mask_predictor.conv."),
)
"""princeton-vl RAFT names (under `of_extractor.`) -> torchvision's `raft_large`, applied in order."""
_RAFT_NORM3 = re.compile(r"\.(layer\d+\.\d+)\.norm3\.")  # the same module as `downsample.1`, saved twice
_LORA = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])\.default\.weight$")
_PEFT_PREFIX = "model.language_model.base_model.model."
_LIGHTNING_KEYS = ("pytorch-lightning_version", "epoch", "global_step", "optimizer_states", "callbacks")


class ConversionError(ValueError):
    """The checkpoint cannot be converted: not the original release, unreadable, or keys that do not match."""


@dataclass
class ConversionReport:
    """What the conversion did with every key. `unused` and `missing` are empty for a complete conversion; keys
    there were allowed by `allow_missing`."""

    checkpoint: str
    base_vlm: str
    bert: str
    bridge_mode: str
    lora: str
    lora_rank: int | None = None
    lora_alpha: int | None = None
    lora_modules: int = 0
    converted: dict[str, int] = field(default_factory=dict)
    dropped_by_design: dict[str, str] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def write(self, folder: Path) -> Path:
        path = folder / REPORT_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


# ---- reading ----------------------------------------------------------------------------------------------------


def load_original_state_dict(path: str | os.PathLike, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The release's state dict, flat or from a Lightning checkpoint's `state_dict` (memory-mapped when possible).

    Without `trust_pickle` the file is read with `torch.load(weights_only=True)`, which refuses arbitrary objects (a
    Lightning checkpoint usually holds some); with it, `weights_only=False` runs the file's pickle code, so the file
    must come from a source you trust.

    Raises:
        FileNotFoundError: no such file.
        ConversionError: unreadable or truncated file, pickle refused, a Lightning checkpoint without `state_dict`, or
            a state dict of another model (no `temporal_encoder.*` keys).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=not trust_pickle, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            # a checkpoint in torch's legacy (non-zip) format cannot be memory-mapped
            loaded = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as error:
        if trust_pickle:
            raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({_first_line(error)})") from error
        raise ConversionError(
            f"{path}: holds objects that torch.load(weights_only=True) refuses (a Lightning checkpoint does); if the "
            "file comes from a source you trust, pass --trust-pickle (trust_pickle=True) to unpickle it"
        ) from error
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as error:
        raise ConversionError(
            f"{path}: not a readable PyTorch checkpoint, truncated or corrupt? ({_first_line(error)})"
        ) from error
    if not isinstance(loaded, Mapping):
        raise ConversionError(f"{path}: holds a {type(loaded).__name__}, not a state dict")
    if "state_dict" in loaded:
        state_dict = loaded["state_dict"]
        if not isinstance(state_dict, Mapping):
            raise ConversionError(f"{path}: its 'state_dict' is a {type(state_dict).__name__}, not a state dict")
    elif any(key in loaded for key in _LIGHTNING_KEYS):
        raise ConversionError(f"{path}: a Lightning checkpoint without 'state_dict' (keys: {sorted(loaded)[:8]})")
    else:
        state_dict = loaded
    not_tensors = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ConversionError(f"{path}: state dict entries that are not tensors, e.g. {not_tensors[:3]}")
    if not any(key.startswith("temporal_encoder.") for key in state_dict):
        prefixes = sorted({key.split(".")[0] for key in state_dict})
        raise ConversionError(
            f"{path}: not the original VideoTGB release: no temporal_encoder.* keys (its prefixes: {prefixes[:10]})"
        )
    return dict(state_dict)


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# ---- renaming -----------------------------------------------------------------------------------------------------


@dataclass
class MappedWeights:
    """The source keys sorted into their destinations."""

    model: dict[str, torch.Tensor] = field(default_factory=dict)  # our names
    raft: dict[str, torch.Tensor] = field(default_factory=dict)  # torchvision's raft_large names
    lora: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # our module name -> {"A", "B"}
    dropped: dict[str, str] = field(default_factory=dict)  # source key -> reason
    unknown: list[str] = field(default_factory=list)  # source keys with no known destination
    sources: dict[str, str] = field(default_factory=dict)  # destination ("raft:" for RAFT) -> source key


def bridge_key(original: str) -> str | None:
    """Our `bridge.*` name of an original `temporal_encoder.*` key (without that prefix), or None if unknown."""
    if re.match(r"^encoder\.layer\.\d+\.", original):
        return "bridge." + original
    for old, new in ORIGINAL_BRIDGE_NAMES:
        if original == old or (old.endswith(".") and original.startswith(old)):
            return "bridge." + new + original[len(old) :]
    return None


def raft_key(original: str) -> str:
    """torchvision `raft_large` name of a princeton-vl RAFT key (without `of_extractor.`)."""
    key = original
    for pattern, replacement in _RAFT_NAMES:
        key = re.sub(pattern, replacement, key)
    return key


def map_original_keys(state_dict: Mapping[str, torch.Tensor], first_bridge_layer: int = 0) -> MappedWeights:
    """Sort the release's keys into our model's names, torchvision's RAFT names, LoRA pairs, keys dropped by design
    (with the reason) and unknown keys. Bridge layers below `first_bridge_layer` are dropped (a `fusion` bridge)."""
    mapped = MappedWeights()

    def put(destination: dict, name: str, source: str, tag: str = "") -> None:
        if name in destination:
            mapped.unknown.append(source)  # two source keys for one weight: an unknown layout
            return
        destination[name] = state_dict[source]
        mapped.sources[tag + name] = source

    for key in state_dict:
        reason = next((why for pattern, why in _DROPPED_BY_DESIGN if re.search(pattern, key)), None)
        if reason is not None:
            mapped.dropped[key] = reason
        elif key.startswith(_PEFT_PREFIX):
            inner = "language_model." + key[len(_PEFT_PREFIX) :]
            lora = _LORA.match(inner)
            if lora:
                mapped.lora.setdefault(lora["module"], {})[lora["which"]] = state_dict[key]
                mapped.sources[f"lora:{lora['module']}.{lora['which']}"] = key
            elif ".lora_" in inner:
                mapped.unknown.append(key)
            else:
                put(mapped.model, inner.replace(".base_layer.", "."), key)
        elif key.startswith("model."):
            put(mapped.model, key[len("model.") :], key)
        elif key.startswith("temporal_encoder."):
            inner = key[len("temporal_encoder.") :]
            layer = re.match(r"^encoder\.layer\.(\d+)\.", inner)
            name = bridge_key(inner)
            if layer and int(layer[1]) < first_bridge_layer:
                mapped.dropped[key] = "layer before fusion_layer, not run by a fusion-mode bridge"
            elif name is None:
                mapped.unknown.append(key)
            else:
                put(mapped.model, name, key)
        elif key.startswith("of_extractor."):
            inner = key[len("of_extractor.") :]
            if _RAFT_NORM3.search(inner):
                twin = "of_extractor." + _RAFT_NORM3.sub(r".\1.downsample.1.", inner)
                if twin in state_dict and torch.equal(state_dict[twin], state_dict[key]):
                    mapped.dropped[key] = f"the same tensor as {twin}"
                else:
                    mapped.unknown.append(key)
            else:
                put(mapped.raft, raft_key(inner), key, "raft:")
        else:
            mapped.unknown.append(key)
    return mapped


# ---- the bridge config, read from the weights -------------------------------------------------------------------


def bridge_config_from_weights(state_dict: Mapping[str, torch.Tensor], mode: str = RELEASE_MODE) -> dict:
    """`VideoTGBBridgeConfig` fields of the original bridge, from its weights' shapes; the rest are BERT-base's
    (the original built its bridge from `BertConfig(fusion_layer=6)`)."""

    def shape(name: str) -> tuple[int, ...]:
        key = "temporal_encoder." + name
        if key not in state_dict:
            raise ConversionError(f"the checkpoint lacks {key}, which the bridge's architecture is read from")
        return tuple(state_dict[key].shape)

    vocab_size, hidden_size = shape("embeddings.word_embeddings.weight")
    layers = sorted(
        {
            int(match[1])
            for key in state_dict
            if (match := re.match(r"^temporal_encoder\.encoder\.layer\.(\d+)\.", key))
        }
    )
    cross = [
        index
        for index in layers
        if f"temporal_encoder.encoder.layer.{index}.crossattention.self.query.weight" in state_dict
    ]
    if not layers or not cross:
        raise ConversionError("the checkpoint's temporal_encoder has no encoder layers with crossattention")
    flow_positions, head_dim = shape("encoder.embed_positions.weight")
    question_positions, _ = shape("encoder.c_embed_positions.weight")
    patch = shape("temporal_embeddings.projection.weight")[-1]
    grid = math.isqrt(shape("temporal_embeddings.fc.weight")[-1])
    if shape("temporal_embeddings.frame_pos_embed.weight")[0] != flow_positions:
        raise ConversionError(
            "temporal_encoder.temporal_embeddings.frame_pos_embed.weight and encoder.embed_positions.weight have "
            "different numbers of rows; this bridge layout is unknown"
        )
    return {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_hidden_layers": layers[-1] + 1,
        "num_attention_heads": hidden_size // head_dim,
        "intermediate_size": shape(f"encoder.layer.{layers[-1]}.intermediate.dense.weight")[0],
        "type_vocab_size": shape("embeddings.token_type_embeddings.weight")[0],
        "max_position_embeddings": flow_positions,
        "max_text_positions": question_positions,
        "fusion_layer": cross[0],
        "mode": mode,
        "flow_size": grid * patch,
        "flow_patch_size": patch,
        "flow_estimator": "raft_large",
        "rotary_init": "normal",
    }


# ---- LoRA -----------------------------------------------------------------------------------------------------------


def lora_rank(lora: Mapping[str, Mapping[str, torch.Tensor]]) -> int:
    """The rank shared by all LoRA pairs; ConversionError naming a module whose pair is incomplete or differs."""
    ranks = set()
    for module, pair in lora.items():
        if set(pair) != {"A", "B"}:
            raise ConversionError(f"LoRA of {module} has only lora_{''.join(pair)}, not both lora_A and lora_B")
        if pair["A"].shape[0] != pair["B"].shape[1]:
            raise ConversionError(
                f"LoRA of {module}: lora_A {tuple(pair['A'].shape)} and lora_B {tuple(pair['B'].shape)}"
            )
        ranks.add(pair["A"].shape[0])
    if len(ranks) > 1:
        raise ConversionError(f"LoRA pairs of different ranks {sorted(ranks)}; this layout is unknown")
    return ranks.pop()


def merge_lora(weights: dict[str, torch.Tensor], lora: Mapping[str, Mapping[str, torch.Tensor]], scale: float) -> None:
    """`W += scale * B @ A` for each LoRA module, in float32, stored in W's dtype (in place in `weights`)."""
    for module, pair in lora.items():
        key = module + ".weight"
        if key not in weights:
            raise ConversionError(f"LoRA for {module}, but the checkpoint has no {key} to merge it into")
        base = weights[key]
        delta = pair["B"].float() @ pair["A"].float()
        if delta.shape != base.shape:
            raise ConversionError(f"LoRA of {module} has shape {tuple(delta.shape)}, its weight {tuple(base.shape)}")
        weights[key] = (base.float() + scale * delta).to(base.dtype)


def write_lora_adapter(
    folder: Path, lora: Mapping[str, Mapping[str, torch.Tensor]], rank: int, alpha: int, base_model: str
) -> None:
    """A peft LoRA adapter for the language model (`model.language_model`): `adapter_config.json` and
    `adapter_model.safetensors`."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for module, pair in lora.items():
        inner = module.removeprefix("language_model.")
        tensors[f"base_model.model.{inner}.lora_A.weight"] = pair["A"].contiguous()
        tensors[f"base_model.model.{inner}.lora_B.weight"] = pair["B"].contiguous()
    save_file(tensors, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": RELEASE_LORA_DROPOUT,
        "target_modules": sorted({module.rsplit(".", 1)[-1] for module in lora}),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")


# ---- checks ---------------------------------------------------------------------------------------------------------


def _allowed(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


def _check_keys(
    mapped: MappedWeights,
    expected: Mapping[str, tuple[int, ...]],
    expected_raft: Mapping[str, tuple[int, ...]],
    allow_missing: list[str],
) -> tuple[list[str], list[str]]:
    """(unused source keys, missing target keys), all allowed; ConversionError naming the others and mismatched
    shapes. Target keys are our model's names and `raft:` + torchvision's RAFT names."""
    unused = sorted(mapped.unknown)
    for name in mapped.model:
        if name not in expected:
            unused.append(mapped.sources[name])
    for name in mapped.raft:
        if name not in expected_raft:
            unused.append(mapped.sources["raft:" + name])
    missing = [name for name in expected if name not in mapped.model]
    missing += ["raft:" + name for name in expected_raft if name not in mapped.raft]
    mismatched = [
        f"{mapped.sources[name]} {tuple(mapped.model[name].shape)} -> {name} {expected[name]}"
        for name in mapped.model
        if name in expected and tuple(mapped.model[name].shape) != tuple(expected[name])
    ]
    mismatched += [
        f"{mapped.sources['raft:' + name]} {tuple(mapped.raft[name].shape)} -> raft_large {name} {expected_raft[name]}"
        for name in mapped.raft
        if name in expected_raft and tuple(mapped.raft[name].shape) != tuple(expected_raft[name])
    ]
    if mismatched:
        raise ConversionError(
            f"{len(mismatched)} weights do not fit the model built from the base VLM's config (is --base-vlm the "
            f"release's base, at the right --revision?): {'; '.join(mismatched[:5])}"
        )
    problems = []
    refused_unused = [key for key in unused if not _allowed(key, allow_missing)]
    refused_missing = [key for key in missing if not _allowed(key, allow_missing)]
    if refused_unused:
        problems.append(f"{len(refused_unused)} checkpoint keys of an unknown layout: {refused_unused[:5]}")
    if refused_missing:
        problems.append(f"{len(refused_missing)} weights missing from the checkpoint: {refused_missing[:5]}")
    if problems:
        raise ConversionError(
            "; ".join(problems) + " (a checkpoint of another version? --allow-missing KEY_OR_PATTERN accepts them)"
        )
    return sorted(unused), missing


# ---- building ------------------------------------------------------------------------------------------------------


def _expected_raft() -> dict[str, tuple[int, ...]]:
    from torchvision.models.optical_flow import raft_large

    with torch.device("meta"):
        model = raft_large(weights=None, progress=False)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def _fill_model(model, weights: dict[str, torch.Tensor], missing: list[str]):
    """Give a model built on the meta device `weights` (assigned, not copied, so that a 7B model is never held twice)
    and freshly initialised values for the `missing` weights."""
    owners = {name.rsplit(".", 1)[0] if "." in name else "" for name in missing}
    for owner in sorted(owners):
        module = model.get_submodule(owner)
        module.to_empty(device="cpu", recurse=False)
        (model.bridge if owner.startswith("bridge.") else model)._init_weights(module)
    result = model.load_state_dict(weights, strict=False, assign=True)
    if sorted(result.missing_keys) != sorted(missing) or result.unexpected_keys:
        raise ConversionError(f"weights left unfilled: {sorted(set(result.missing_keys) - set(missing))[:5]}")
    return model.eval()


def convert_original(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    base_vlm: str = DEFAULT_BASE_VLM,
    bert: str = DEFAULT_BERT,
    lora: str = "merge",
    allow_missing: Iterable[str] = (),
    trust_pickle: bool = False,
    overwrite: bool = False,
    bridge_mode: str = RELEASE_MODE,
    hub_kwargs: dict | None = None,
) -> ConversionReport:
    r"""
    Convert the original release into a VideoTGB checkpoint folder (model, processor, RAFT weights, report).

    Args:
        checkpoint: the release's `.ckpt` / `.pth` (flat state dict or Lightning checkpoint).
        out: folder to write; it must be empty or absent unless `overwrite`.
        base_vlm: InstructBLIP checkpoint whose config gives the architecture and whose tokenizers and image
            processor the processor uses (folder or Hub id; pass `hub_kwargs={"revision": ...}` to pin one).
        bert: BERT checkpoint whose tokenizer the bridge reads questions with (bert-base-uncased).
        lora: `"merge"` adds `scale * B @ A` (scale = alpha / r, alpha 32) to each LoRA-adapted weight; `"keep"`
            writes the LoRA weights as a peft adapter in `out/lora_adapter/` and leaves the language model as it was
            before LoRA.
        allow_missing: source or target keys (fnmatch patterns) that may stay unconverted or unfilled; target keys
            are our names (`bridge.*`, `language_model.*`, ...) and `raft:` + torchvision's RAFT names. Unfilled
            weights keep their fresh initialisation, and a RAFT with missing weights is not written at all.
        trust_pickle: read the checkpoint with `torch.load(weights_only=False)`, which runs code stored in the file;
            only for a file from a source you trust (the Lightning form needs it).
        overwrite: write into a folder that already holds files.
        bridge_mode: `"multi_modal"` (the release's evaluation, default) or `"fusion"` (its training).
        hub_kwargs: `revision`, `token`, `cache_dir`, ... for `base_vlm` and `bert`.

    Returns:
        The report, also written to `out/conversion_report.json`.
    """
    from transformers import AutoConfig

    from .configuration_videotgb import BRIDGE_MODES
    from .init_checkpoint import check_output_folder
    from .modeling_videotgb import VideoTGBForConditionalGeneration, config_from_vlm
    from .optical_flow import save_raft_weights
    from .processing_videotgb import VideoTGBProcessor

    if lora not in LORA_CHOICES:
        raise ValueError(f"lora must be one of {LORA_CHOICES}, got {lora!r}")
    if bridge_mode not in BRIDGE_MODES:
        raise ValueError(f"bridge_mode must be one of {BRIDGE_MODES}, got {bridge_mode!r}")
    output = check_output_folder(out, overwrite)
    allow_missing = list(allow_missing)
    hub_kwargs = dict(hub_kwargs or {})

    source = load_original_state_dict(checkpoint, trust_pickle=trust_pickle)
    bridge_fields = bridge_config_from_weights(source, bridge_mode)
    first_layer = bridge_fields["fusion_layer"] if bridge_mode == "fusion" else 0
    mapped = map_original_keys(source, first_layer)
    vlm_config = AutoConfig.from_pretrained(base_vlm, **hub_kwargs)
    config = config_from_vlm(
        vlm_config,
        bridge_fields,
        base_vlm,
        num_candidate_frames=RELEASE_NUM_CANDIDATE_FRAMES,
        num_keyframes=RELEASE_NUM_KEYFRAMES,
        frame_aggregation=RELEASE_FRAME_AGGREGATION,
    )
    with torch.device("meta"):
        model = VideoTGBForConditionalGeneration(config)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    unused, missing = _check_keys(mapped, expected, _expected_raft(), allow_missing)

    report = ConversionReport(
        checkpoint=os.fspath(checkpoint),
        base_vlm=base_vlm,
        bert=bert,
        bridge_mode=bridge_mode,
        lora=lora if mapped.lora else "none",
        dropped_by_design=dict(sorted(mapped.dropped.items())),
        unused=unused,
        missing=missing,
    )
    if mapped.lora:
        report.lora_rank, report.lora_alpha, report.lora_modules = (
            lora_rank(mapped.lora),
            RELEASE_LORA_ALPHA,
            len(mapped.lora),
        )
        if lora == "merge":
            merge_lora(mapped.model, mapped.lora, RELEASE_LORA_ALPHA / report.lora_rank)
    model_missing = [name for name in missing if not name.startswith("raft:")]
    usable = {name: tensor for name, tensor in mapped.model.items() if name in expected}
    model = _fill_model(model, usable, model_missing)

    raft_complete = not any(name.startswith("raft:") for name in missing)
    flow_config = {"estimator": "raft_large", "size": config.bridge_config.flow_size}
    if raft_complete:
        flow_config["raft_weights"] = RAFT_WEIGHTS_FILE
    else:
        logger.warning("the checkpoint's RAFT weights are incomplete: none written, the flow config names none")
    processor = VideoTGBProcessor.from_blip_and_bert(
        base_vlm, bert, model.config, hub_kwargs=hub_kwargs, flow_config=flow_config
    )
    processor.check_model_config(model.config)
    processor.check_chat_template()
    if raft_complete:
        raft = _load_raft(mapped.raft)

    report.converted = {
        "model": len(usable),
        "raft": len(mapped.raft) if raft_complete else 0,
        "lora_pairs": len(mapped.lora),
    }
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    if raft_complete:
        save_raft_weights(raft, output / RAFT_WEIGHTS_FILE)
    if mapped.lora and lora == "keep":
        write_lora_adapter(output / ADAPTER_FOLDER, mapped.lora, report.lora_rank, RELEASE_LORA_ALPHA, base_vlm)
    report.write(output)
    logger.info("converted %s into %s", checkpoint, output)
    return report


def _load_raft(weights: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """torchvision's `raft_large` holding `weights`, loaded strictly."""
    from torchvision.models.optical_flow import raft_large

    model = raft_large(weights=None, progress=False)
    model.load_state_dict(dict(weights), strict=True)
    return model.eval()


# ---- command line -------------------------------------------------------------------------------------------------


def add_convert_parser(commands) -> None:
    """Add `videotgb convert-original` to the `videotgb` sub-command parsers."""
    parser = commands.add_parser(
        "convert-original",
        help="convert the original VideoTGB release (ColorfulAI/VideoTGB-Chat) into a VideoTGB checkpoint folder",
        description="Convert the original release's PyTorch state dict (flat, or a Lightning checkpoint's "
        "state_dict) into a checkpoint folder with safetensors weights, the processor (32 candidates, K = 4, "
        "Vicuna v1 prompt, RAFT-large flow at 224x224), the RAFT weights and conversion_report.json. The bridge "
        "runs in multi_modal mode, as in the release's evaluation. See docs/checkpoints.md.",
    )
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="the release's .ckpt / .pth file")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write (empty unless --overwrite)")
    parser.add_argument(
        "--base-vlm",
        default=DEFAULT_BASE_VLM,
        metavar="ID_OR_FOLDER",
        help="InstructBLIP giving the architecture, tokenizers and image processor (default: %(default)s)",
    )
    parser.add_argument("--revision", default=None, help="Hub revision of --base-vlm and --bert")
    parser.add_argument(
        "--bert", default=DEFAULT_BERT, metavar="ID_OR_FOLDER", help="the bridge's tokenizer (default: %(default)s)"
    )
    parser.add_argument(
        "--lora",
        choices=LORA_CHOICES,
        default="merge",
        help="merge LoRA weights into the language model (default) or keep them as a peft adapter in lora_adapter/",
    )
    parser.add_argument(
        "--bridge-mode",
        choices=["multi_modal", "fusion"],
        default=RELEASE_MODE,
        help="multi_modal: all layers, as the release was evaluated (default); fusion: layers 6-11, as it was trained",
    )
    parser.add_argument(
        "--allow-missing",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY",
        help="checkpoint or target keys (fnmatch patterns) that may stay unconverted or unfilled",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="read the checkpoint with torch.load(weights_only=False), which runs code stored in the file: only for "
        "a file from a trusted source (Lightning checkpoints need it)",
    )
    parser.add_argument("--overwrite", action="store_true", help="write into a folder that already holds files")
    parser.set_defaults(run=_convert_command)


def _convert_command(arguments) -> int:
    report = convert_original(
        arguments.checkpoint,
        arguments.out,
        base_vlm=arguments.base_vlm,
        bert=arguments.bert,
        lora=arguments.lora,
        allow_missing=arguments.allow_missing,
        trust_pickle=arguments.trust_pickle,
        overwrite=arguments.overwrite,
        bridge_mode=arguments.bridge_mode,
        hub_kwargs={"revision": arguments.revision} if arguments.revision else None,
    )
    allowed = len(report.unused) + len(report.missing)
    print(
        f"wrote {arguments.out}: {report.converted['model']} model weights, {report.converted['raft']} RAFT weights, "
        f"{report.lora_modules} LoRA modules ({report.lora}), {len(report.dropped_by_design)} keys dropped by design, "
        f"{allowed} allowed mismatches; see {REPORT_FILE}"
    )
    return 0


__all__ = [
    "ConversionError",
    "ConversionReport",
    "add_convert_parser",
    "bridge_config_from_weights",
    "convert_original",
    "load_original_state_dict",
    "map_original_keys",
    "merge_lora",
    "raft_key",
]
