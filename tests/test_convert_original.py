"""`videotgb convert-original`: a state dict with the original release's key names (InstructBLIP under `model.`, the
bridge under `temporal_encoder.`, princeton-vl RAFT under `of_extractor.`, peft LoRA in the language model), at tiny
sizes, becomes a checkpoint folder that computes what the original computed."""

from __future__ import annotations

import functools
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_one_line_error, run_cli, write_blip_folder
from safetensors.torch import load_file

from videotgb.convert_original import RAFT_WEIGHTS_FILE, REPORT_FILE, load_original_state_dict

HIDDEN, HEADS, LAYERS, FUSION, INTERMEDIATE, POSITIONS, BERT_VOCAB, PATCH, FLOW = 32, 4, 4, 2, 64, 64, 30522, 16, 224
LORA_RANK = 4  # not the release's 8: the converter reads r from the weights
LORA_SCALE = 32 / LORA_RANK


def original_bridge_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """The original bridge's state dict (`RopeBertModel` of the original code) with random values, tiny sizes."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, std: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std

    def linear(name: str, out: int, inp: int) -> dict:
        return {f"{name}.weight": rand(out, inp), f"{name}.bias": rand(out)}

    def norm(name: str) -> dict:
        return {f"{name}.weight": 1 + rand(HIDDEN, std=0.1), f"{name}.bias": rand(HIDDEN, std=0.1)}

    weights = {
        "embeddings.word_embeddings.weight": rand(BERT_VOCAB, HIDDEN),
        "embeddings.token_type_embeddings.weight": rand(2, HIDDEN),
        "embeddings.position_embeddings.weight": rand(POSITIONS, HIDDEN),  # unused by the original's forward
        **norm("embeddings.LayerNorm"),
        "temporal_embeddings.bos": rand(HIDDEN),
        "temporal_embeddings.eos": rand(HIDDEN),
        "temporal_embeddings.position_ids": torch.arange(POSITIONS).expand(1, -1),
        "temporal_embeddings.projection.weight": rand(HIDDEN, 2, PATCH, PATCH, std=0.05),
        "temporal_embeddings.projection.bias": rand(HIDDEN),
        **linear("temporal_embeddings.fc", 1, (FLOW // PATCH) ** 2),
        "temporal_embeddings.frame_pos_embed.weight": rand(POSITIONS, HIDDEN),
        **norm("temporal_embeddings.ln"),
        # the random rotary tables of the release, which must survive exactly
        "encoder.embed_positions.weight": rand(POSITIONS, HIDDEN // HEADS, std=0.02 * 30),
        "encoder.c_embed_positions.weight": rand(POSITIONS, HIDDEN // HEADS, std=0.02 * 30),
        **linear("mrc_head", 2, HIDDEN),
    }
    for index in range(LAYERS):
        blocks = ["attention"] + (["crossattention"] if index >= FUSION else [])
        for block in blocks:
            prefix = f"encoder.layer.{index}.{block}"
            for name in ("query", "key", "value"):
                weights.update(linear(f"{prefix}.self.{name}", HIDDEN, HIDDEN))
            weights.update(linear(f"{prefix}.output.dense", HIDDEN, HIDDEN))
            weights.update(norm(f"{prefix}.output.LayerNorm"))
        weights.update(linear(f"encoder.layer.{index}.intermediate.dense", INTERMEDIATE, HIDDEN))
        weights.update(linear(f"encoder.layer.{index}.output.dense", HIDDEN, INTERMEDIATE))
        weights.update(norm(f"encoder.layer.{index}.output.LayerNorm"))
    return weights


def original_bridge_logits(weights: dict, flow: torch.Tensor, question: torch.Tensor, mode: str) -> torch.Tensor:
    """Start / end logits `(batch, steps, 2)` of the original bridge's forward, written from the original code
    (`TemporalOFEmbedding`, `RopeBertEmbeddings`, `BertEncoder`, `mrc_head`) on its own key names; every flow step and
    question token valid (no padding)."""

    def w(name: str) -> torch.Tensor:
        return weights["temporal_encoder." + name]

    def layer_norm(x, name, eps):
        return F.layer_norm(x, (HIDDEN,), w(name + ".weight"), w(name + ".bias"), eps)

    def rope(x, table):  # the original's apply_rope
        sin, cos = table[None, None].chunk(2, dim=-1)
        sin = torch.stack([sin, sin], dim=-1).reshape(*sin.shape[:-1], -1)
        cos = torch.stack([cos, cos], dim=-1).reshape(*cos.shape[:-1], -1)
        half = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape_as(x)
        return x * cos + half * sin

    def attention(x, source, name, query_table, key_table):
        def heads(t):
            return t.view(*t.shape[:2], HEADS, -1).transpose(1, 2)

        q = rope(heads(F.linear(x, w(name + ".self.query.weight"), w(name + ".self.query.bias"))), query_table)
        k = rope(heads(F.linear(source, w(name + ".self.key.weight"), w(name + ".self.key.bias"))), key_table)
        v = heads(F.linear(source, w(name + ".self.value.weight"), w(name + ".self.value.bias")))
        probs = torch.softmax(q @ k.transpose(-1, -2) / (HIDDEN // HEADS) ** 0.5, dim=-1)
        out = (probs @ v).transpose(1, 2).reshape(x.shape)
        dense = F.linear(out, w(name + ".output.dense.weight"), w(name + ".output.dense.bias"))
        return layer_norm(dense + x, name + ".output.LayerNorm", 1e-12)

    batch, steps = flow.shape[:2]
    x = F.conv2d(
        flow.flatten(0, 1),
        w("temporal_embeddings.projection.weight"),
        w("temporal_embeddings.projection.bias"),
        stride=PATCH,
    )
    x = F.linear(x.flatten(2), w("temporal_embeddings.fc.weight"), w("temporal_embeddings.fc.bias")).view(
        batch, steps, -1
    )
    x = torch.cat([w("temporal_embeddings.bos").expand(batch, 1, -1), x, torch.zeros(batch, 1, HIDDEN)], dim=1)
    x[:, steps + 1] = w("temporal_embeddings.eos")
    x = x + w("temporal_embeddings.frame_pos_embed.weight")[: steps + 2]
    x = layer_norm(x, "temporal_embeddings.ln", 1e-5)
    q = w("embeddings.word_embeddings.weight")[question] + w("embeddings.token_type_embeddings.weight")[0]
    q = layer_norm(q, "embeddings.LayerNorm", 1e-12)
    flow_table = w("encoder.embed_positions.weight")[: steps + 2]
    question_table = w("encoder.c_embed_positions.weight")[: question.shape[1]]
    for index in range(FUSION if mode == "fusion" else 0, LAYERS):
        prefix = f"encoder.layer.{index}."
        x = attention(x, x, prefix + "attention", flow_table, flow_table)
        if index >= FUSION:
            x = attention(x, q, prefix + "crossattention", flow_table, question_table)
        hidden = F.gelu(F.linear(x, w(prefix + "intermediate.dense.weight"), w(prefix + "intermediate.dense.bias")))
        x = layer_norm(
            F.linear(hidden, w(prefix + "output.dense.weight"), w(prefix + "output.dense.bias")) + x,
            prefix + "output.LayerNorm",
            1e-12,
        )
    return F.linear(x[:, 1:-1], w("mrc_head.weight"), w("mrc_head.bias"))


def princeton_raft_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision's `raft_large(weights=None)` (batch-norm statistics randomised) under the princeton-vl names of the
    original's `of_extractor`, including the `norm3` entries that repeat `downsample.1`."""
    from torchvision.models.optical_flow import raft_large

    torch.manual_seed(seed)
    model = raft_large(weights=None, progress=False)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    back = (
        (r"^feature_encoder\.", "fnet."),
        (r"^context_encoder\.", "cnet."),
        (r"^(fnet|cnet)\.convnormrelu\.0\.", r"\1.conv1."),
        (r"^(fnet|cnet)\.convnormrelu\.1\.", r"\1.norm1."),
        (r"^(fnet|cnet)\.conv\.", r"\1.conv2."),
        (r"\.convnormrelu([12])\.0\.", r".conv\1."),
        (r"\.convnormrelu([12])\.1\.", r".norm\1."),
        (r"motion_encoder\.convcorr([12])\.0\.", r"encoder.convc\1."),
        (r"motion_encoder\.convflow([12])\.0\.", r"encoder.convf\1."),
        (r"motion_encoder\.conv\.0\.", "encoder.conv."),
        (r"recurrent_block\.convgru([12])\.conv([zrq])\.", r"gru.conv\2\1."),
        (r"^mask_predictor\.convrelu\.0\.", "update_block.mask.0."),
        (r"^mask_predictor\.conv\.", "update_block.mask.2."),
    )
    renamed = {}
    for key, value in model.state_dict().items():
        for pattern, replacement in back:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value.clone()
        if ".downsample.1." in key:
            renamed[key.replace(".downsample.1.", ".norm3.")] = value.clone()
    return renamed


def release_state_dict(blip_folder: Path, lora: bool = True) -> dict[str, torch.Tensor]:
    """What the release's training module saved: `model.*` (InstructBLIP, its unused `temporal_projection`, and the
    language model wrapped by peft with LoRA on q_proj / v_proj), `temporal_encoder.*`, `of_extractor.*`."""
    from transformers import InstructBlipForConditionalGeneration

    blip = InstructBlipForConditionalGeneration.from_pretrained(blip_folder)
    generator = torch.Generator().manual_seed(3)
    state = {}
    for key, value in blip.state_dict().items():
        if lora and key.startswith("language_model."):
            key = "language_model.base_model.model." + key.removeprefix("language_model.")
        state["model." + key] = value.clone()
    hidden = blip.config.text_config.hidden_size
    state["model.temporal_projection.weight"] = torch.randn(hidden, blip.config.qformer_config.hidden_size)
    state["model.temporal_projection.bias"] = torch.randn(hidden)
    if lora:
        for index in range(blip.config.text_config.num_hidden_layers):
            for name in ("q_proj", "v_proj"):
                module = f"model.language_model.base_model.model.model.layers.{index}.self_attn.{name}"
                state[f"{module}.lora_A.default.weight"] = torch.randn(LORA_RANK, hidden, generator=generator) * 0.1
                state[f"{module}.lora_B.default.weight"] = torch.randn(hidden, LORA_RANK, generator=generator) * 0.1
    state.update({"temporal_encoder." + key: value for key, value in original_bridge_weights().items()})
    state.update({"of_extractor." + key: value for key, value in princeton_raft_weights().items()})
    return state


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory, llama_tokenizer_path, minilm_path) -> Path:
    return write_blip_folder(tmp_path_factory.mktemp("instructblip"), llama_tokenizer_path, minilm_path)


@pytest.fixture(scope="module")
def release(tmp_path_factory, blip_folder) -> tuple[Path, dict]:
    state = release_state_dict(blip_folder)
    path = tmp_path_factory.mktemp("release") / "VideoTGB-Chat.pth"
    torch.save(state, path)
    return path, state


def convert(release_path: Path, out: Path, blip_folder: Path, minilm_path: Path, *flags: str) -> tuple[int, str, str]:
    return run_cli(
        "convert-original",
        "--checkpoint",
        str(release_path),
        "--out",
        str(out),
        "--base-vlm",
        str(blip_folder),
        "--bert",
        str(minilm_path),
        *flags,
    )


@pytest.fixture(scope="module")
def converted(tmp_path_factory, release, blip_folder, minilm_path) -> Path:
    out = tmp_path_factory.mktemp("converted") / "videotgb-chat"
    status, stdout, stderr = convert(release[0], out, blip_folder, minilm_path)
    assert status == 0, stderr
    assert "wrote" in stdout
    return out


def test_every_key_is_converted_and_the_report_is_empty(converted, release):
    report = json.loads((converted / REPORT_FILE).read_text())
    assert report["unused"] == [] and report["missing"] == []
    assert report["bridge_mode"] == "multi_modal" and report["lora"] == "merge"
    assert report["lora_rank"] == LORA_RANK and report["lora_alpha"] == 32 and report["lora_modules"] == 4
    dropped = report["dropped_by_design"]
    assert set(dropped) == {
        "model.temporal_projection.weight",
        "model.temporal_projection.bias",
        "temporal_encoder.embeddings.position_embeddings.weight",
        "temporal_encoder.temporal_embeddings.position_ids",
        *(key for key in release[1] if ".norm3." in key),
    }
    lora_keys = [key for key in release[1] if ".lora_" in key]
    assert report["converted"]["model"] + report["converted"]["raft"] + len(lora_keys) + len(dropped) == len(
        release[1]
    )
    names = {path.name for path in converted.iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json", RAFT_WEIGHTS_FILE, REPORT_FILE} <= names
    assert not [name for name in names if name.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))]

    config = json.loads((converted / "config.json").read_text())
    bridge = config["bridge_config"]
    assert (bridge["mode"], bridge["rotary_init"], bridge["flow_estimator"]) == ("multi_modal", "normal", "raft_large")
    assert (bridge["flow_size"], bridge["fusion_layer"], bridge["num_hidden_layers"]) == (FLOW, FUSION, LAYERS)
    assert (config["num_candidate_frames"], config["num_keyframes"], config["frame_aggregation"]) == (32, 4, "mean")
    processor = json.loads((converted / "processor_config.json").read_text())
    assert processor["flow_config"]["estimator"] == "raft_large" and processor["flow_config"]["size"] == 224
    assert processor["flow_config"]["raft_weights"] == RAFT_WEIGHTS_FILE  # relative to the folder


def test_the_converted_bridge_computes_the_original_logits(converted, release):
    from videotgb import VideoTGBForConditionalGeneration

    model = VideoTGBForConditionalGeneration.from_pretrained(converted)
    saved = load_file(converted / "model.safetensors")
    original = release[1]
    assert torch.equal(
        saved["bridge.encoder.flow_rotary.weight"], original["temporal_encoder.encoder.embed_positions.weight"]
    )
    assert torch.equal(
        saved["bridge.encoder.question_rotary.weight"], original["temporal_encoder.encoder.c_embed_positions.weight"]
    )
    generator = torch.Generator().manual_seed(5)
    flow = torch.randn(2, 6, 2, FLOW, FLOW, generator=generator)
    question = torch.randint(1000, 2000, (2, 5), generator=generator)
    with torch.no_grad():
        ours = model.bridge(flow, input_ids=question)
        expected = original_bridge_logits(original, flow, question, "multi_modal")
    assert torch.allclose(ours.start_logits, expected[..., 0], atol=1e-5)
    assert torch.allclose(ours.end_logits, expected[..., 1], atol=1e-5)


def test_converted_raft_loads_strictly_into_torchvision_raft_large(converted, release):
    from torchvision.models.optical_flow import raft_large

    weights = load_file(converted / RAFT_WEIGHTS_FILE)
    model = raft_large(weights=None, progress=False)
    model.load_state_dict(weights, strict=True)
    original = release[1]
    assert torch.equal(weights["feature_encoder.convnormrelu.0.weight"], original["of_extractor.fnet.conv1.weight"])
    assert torch.equal(
        weights["context_encoder.layer2.0.convnormrelu1.1.running_var"],
        original["of_extractor.cnet.layer2.0.norm1.running_var"],
    )
    assert torch.equal(
        weights["update_block.recurrent_block.convgru2.convq.weight"],
        original["of_extractor.update_block.gru.convq2.weight"],
    )
    assert torch.equal(weights["mask_predictor.conv.bias"], original["of_extractor.update_block.mask.2.bias"])


def test_merged_lora_is_w_plus_scaled_b_a(converted, release):
    saved = load_file(converted / "model.safetensors")
    original = release[1]
    for index in range(2):
        for name in ("q_proj", "v_proj"):
            module = f"model.language_model.base_model.model.model.layers.{index}.self_attn.{name}"
            a, b = original[f"{module}.lora_A.default.weight"], original[f"{module}.lora_B.default.weight"]
            expected = original[f"{module}.weight"] + LORA_SCALE * b @ a
            assert torch.allclose(
                saved[f"language_model.model.layers.{index}.self_attn.{name}.weight"], expected, atol=1e-6
            )
    key = "language_model.model.layers.0.self_attn.k_proj.weight"
    assert torch.equal(
        saved[key], original["model.language_model.base_model.model.model.layers.0.self_attn.k_proj.weight"]
    )


def test_lora_keep_writes_an_adapter_peft_loads(tmp_path, release, blip_folder, minilm_path):
    from peft import PeftModel

    from videotgb import VideoTGBForConditionalGeneration

    out = tmp_path / "kept"
    status, _, stderr = convert(release[0], out, blip_folder, minilm_path, "--lora", "keep")
    assert status == 0, stderr
    assert json.loads((out / REPORT_FILE).read_text())["lora"] == "keep"
    model = VideoTGBForConditionalGeneration.from_pretrained(out)
    original = release[1]
    module = "model.language_model.base_model.model.model.layers.1.self_attn.v_proj"
    weight = model.language_model.model.layers[1].self_attn.v_proj.weight
    assert torch.equal(weight, original[f"{module}.weight"])  # not merged
    merged = PeftModel.from_pretrained(model.language_model, out / "lora_adapter").merge_and_unload()
    a, b = original[f"{module}.lora_A.default.weight"], original[f"{module}.lora_B.default.weight"]
    expected = original[f"{module}.weight"] + LORA_SCALE * b @ a
    assert torch.allclose(merged.model.layers[1].self_attn.v_proj.weight, expected, atol=1e-6)


def test_fusion_mode_drops_the_first_layers_and_matches_the_original_fusion_run(
    tmp_path, release, blip_folder, minilm_path
):
    from videotgb import VideoTGBForConditionalGeneration

    out = tmp_path / "fusion"
    status, _, stderr = convert(release[0], out, blip_folder, minilm_path, "--bridge-mode", "fusion")
    assert status == 0, stderr
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["unused"] == [] and report["missing"] == []
    assert "temporal_encoder.encoder.layer.1.output.dense.weight" in report["dropped_by_design"]
    model = VideoTGBForConditionalGeneration.from_pretrained(out)
    assert list(model.bridge.encoder.layer) == ["2", "3"]
    flow = torch.randn(1, 3, 2, FLOW, FLOW, generator=torch.Generator().manual_seed(6))
    question = torch.tensor([[2054, 2003, 1996, 3899]])
    with torch.no_grad():
        ours = model.bridge(flow, input_ids=question)
    expected = original_bridge_logits(release[1], flow, question, "fusion")
    assert torch.allclose(ours.start_logits, expected[..., 0], atol=1e-5)


@pytest.mark.slow
def test_the_converted_folder_answers_through_auto_classes_with_remote_code(converted, tmp_path):
    from transformers import AutoModel, AutoProcessor

    from videotgb.synthetic import SyntheticConfig, encode_scene, make_scene

    video = tmp_path / "scene.mp4"
    video.write_bytes(
        encode_scene(make_scene(SyntheticConfig(num_videos={"test": 1}, num_frames=64, event_frames=8), "test", 0))
    )
    model = AutoModel.from_pretrained(converted, trust_remote_code=True)
    # few flow steps keep RAFT-large (20 iterations at 224x224) cheap on a CPU
    processor = AutoProcessor.from_pretrained(converted, trust_remote_code=True, max_flow_steps=3)
    assert type(processor).__module__.startswith("transformers_modules")
    assert processor.flow_settings().raft_weights == str(converted / RAFT_WEIGHTS_FILE)
    inputs = processor(text="What moves across the screen?", videos=str(video))
    assert inputs["flow"].shape == (1, 3, 2, FLOW, FLOW) and inputs["pixel_values"].shape[1] == 32
    output = model.generate(**inputs, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    assert output.sequences.shape[0] == 1 and output.keyframe_indices.shape == (1, 4)
    assert isinstance(processor.batch_decode(output.sequences, skip_special_tokens=True)[0], str)


@pytest.mark.slow
def test_the_converted_folder_exports_with_its_raft_weights_and_answers_in_a_fresh_process(
    converted, blip_folder, minilm_path, tmp_path
):
    from huggingface_hub import ModelCard

    from videotgb.hub_upload import export, read_example, verify

    source = Path(shutil.copytree(converted, tmp_path / "converted"))
    settings = json.loads((source / "processor_config.json").read_text())
    settings["max_flow_steps"] = 3  # RAFT-large at 224x224 costs about a second per step on a CPU
    settings["flow_config"]["raft_iterations"] = 4
    (source / "processor_config.json").write_text(json.dumps(settings))
    out = export(source, tmp_path / "hub", repo_id="someone/videotgb-chat", datasets=["someone/video-instruct"])
    assert (out / RAFT_WEIGHTS_FILE).read_bytes() == (converted / RAFT_WEIGHTS_FILE).read_bytes()
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == [str(blip_folder), str(minilm_path)]  # the BLIP model and the BERT tokenizer
    assert card.data.datasets == ["someone/video-instruct"]
    assert "runs in `multi_modal` mode" in card.text
    example = read_example(out)
    assert card.data.widget == [
        {
            "src": "https://huggingface.co/someone/videotgb-chat/resolve/main/examples/video.mp4",
            "text": example["question"],
            "example_title": "Synthetic video: which shape moved?",
            "output": {"text": example["answer"]},
        }
    ]
    answered = verify(out)  # RAFT flow from the folder's own weights, in a process without the package
    assert answered["answer"] == example["answer"]
    assert answered["keyframe_timestamps"] == pytest.approx(example["keyframe_timestamps"], abs=1e-3)


def test_processor_resolves_raft_weights_inside_the_folder_and_keeps_the_path_relative(converted, tmp_path):
    from videotgb import VideoTGBProcessor

    processor = VideoTGBProcessor.from_pretrained(converted)
    assert processor.flow_settings().raft_weights == str(converted / RAFT_WEIGHTS_FILE)
    processor.save_pretrained(tmp_path / "again")
    saved = json.loads((tmp_path / "again" / "processor_config.json").read_text())
    assert saved["flow_config"]["raft_weights"] == RAFT_WEIGHTS_FILE
    with pytest.raises(OSError, match=f"names {RAFT_WEIGHTS_FILE}, which is not in the folder"):
        VideoTGBProcessor.from_pretrained(tmp_path / "again")


# ---- bad inputs ------------------------------------------------------------------------------------------------------


def _write(path: Path, value) -> Path:
    torch.save(value, path)
    return path


def test_lightning_checkpoints_need_trust_pickle(tmp_path, release, blip_folder, minilm_path):
    lightning = {
        "epoch": 1,
        "global_step": 10,
        "pytorch-lightning_version": "2.1.2",
        "hyper_parameters": {"optimizer": functools.partial(torch.optim.AdamW, lr=5e-5)},
        "state_dict": release[1],
    }
    path = _write(tmp_path / "epoch_001.ckpt", lightning)
    status, _, stderr = convert(path, tmp_path / "out", blip_folder, minilm_path)
    assert_one_line_error(status, stderr, str(path), "--trust-pickle")
    assert not (tmp_path / "out").exists()
    status, _, stderr = convert(path, tmp_path / "out", blip_folder, minilm_path, "--trust-pickle")
    assert status == 0, stderr
    assert json.loads((tmp_path / "out" / REPORT_FILE).read_text())["unused"] == []


def test_a_plain_lightning_checkpoint_loads_without_pickle(tmp_path):
    state = {"temporal_encoder.mrc_head.bias": torch.zeros(2)}
    path = _write(tmp_path / "weights.ckpt", {"state_dict": state, "epoch": 3})
    assert load_original_state_dict(path).keys() == state.keys()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ({"vision_model.embeddings.class_embedding": torch.zeros(1)}, "no temporal_encoder.* keys"),
        ({"epoch": 1, "global_step": 5, "optimizer_states": []}, "a Lightning checkpoint without 'state_dict'"),
        ([torch.zeros(1)], "not a state dict"),
    ],
)
def test_checkpoints_that_are_not_the_release_are_refused(tmp_path, content, fragment):
    path = _write(tmp_path / "other.pth", content)
    status, _, stderr = run_cli("convert-original", "--checkpoint", str(path), "--out", str(tmp_path / "out"))
    assert_one_line_error(status, stderr, str(path), fragment)
    assert not (tmp_path / "out").exists()


def test_a_truncated_file_is_refused(tmp_path):
    whole = _write(tmp_path / "whole.pth", {"temporal_encoder.mrc_head.bias": torch.zeros(1000)})
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[:-200])
    status, _, stderr = run_cli("convert-original", "--checkpoint", str(cut), "--out", str(tmp_path / "out"))
    assert_one_line_error(status, stderr, str(cut), "truncated or corrupt")
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        load_original_state_dict(tmp_path / "absent.pth")


def test_keys_of_an_unknown_version_are_named(tmp_path, release, blip_folder, minilm_path):
    state = dict(release[1])
    state["temporal_encoder.encoder.layer.0.attention.self.rotary_scale"] = torch.ones(1)
    del state["temporal_encoder.mrc_head.bias"]
    path = _write(tmp_path / "newer.pth", state)
    status, _, stderr = convert(path, tmp_path / "out", blip_folder, minilm_path)
    assert_one_line_error(
        status,
        stderr,
        "temporal_encoder.encoder.layer.0.attention.self.rotary_scale",
        "bridge.span_head.bias",
        "--allow-missing",
    )
    assert not (tmp_path / "out").exists()


def test_allow_missing_accepts_named_keys_and_reports_them(tmp_path, release, blip_folder, minilm_path):
    state = {key: value for key, value in release[1].items() if not key.startswith("of_extractor.")}
    state["temporal_encoder.pooler.dense.weight"] = torch.ones(HIDDEN, HIDDEN)
    del state["temporal_encoder.mrc_head.bias"]
    path = _write(tmp_path / "partial.pth", state)
    allowed = ["temporal_encoder.pooler.*", "bridge.span_head.bias", "raft:*"]
    status, _, stderr = convert(path, tmp_path / "out", blip_folder, minilm_path, "--allow-missing", *allowed)
    assert status == 0, stderr
    report = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert report["unused"] == ["temporal_encoder.pooler.dense.weight"]
    assert "bridge.span_head.bias" in report["missing"] and "raft:mask_predictor.conv.weight" in report["missing"]
    assert not (tmp_path / "out" / RAFT_WEIGHTS_FILE).exists()
    assert json.loads((tmp_path / "out" / "processor_config.json").read_text())["flow_config"]["raft_weights"] is None
    assert load_file(tmp_path / "out" / "model.safetensors")["bridge.span_head.bias"].shape == (2,)


def test_an_existing_output_folder_needs_overwrite(tmp_path):
    path = _write(tmp_path / "release.pth", {"temporal_encoder.mrc_head.bias": torch.zeros(2)})
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    status, _, stderr = run_cli("convert-original", "--checkpoint", str(path), "--out", str(out))
    assert_one_line_error(status, stderr, str(out), "--overwrite")
    assert (out / "notes.txt").read_text() == "keep me"
