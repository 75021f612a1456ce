"""Checks written the way transformers' common model tests (`tests/test_modeling_common.py`) write them: dtype,
half precision, accelerate offload, attention implementations, `inputs_embeds`, output flags from the config,
`main_input_name`, and what `from_pretrained` / `from_blip_and_bert` accept and report."""

from __future__ import annotations

import inspect
import logging

import pytest
import torch
from conftest import LLAMA, QFORMER, VISION, randomize_, tiny_model, video_batch
from transformers import PretrainedConfig
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging as hf_logging

from videotgb import VideoTGBBridgeConfig, VideoTGBBridgeModel, VideoTGBForConditionalGeneration

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


# ---- accelerate offload -----------------------------------------------------------------------------------------


def explicit_offload_map(model) -> dict[str, str]:
    """Vision tower, query tokens and the LM's embeddings on the CPU; Q-Former, projection, bridge, LM body on disk."""
    device_map = {"vision_model": "cpu", "query_tokens": "cpu", "qformer": "disk", "language_projection": "disk"}
    device_map |= {"bridge.embeddings": "cpu", "bridge.flow_embeddings": "disk", "bridge.encoder": "disk"}
    device_map["bridge.span_head"] = "cpu"
    for name, _ in model.language_model.named_children():
        device_map[f"language_model.{name}"] = "disk"
    return device_map


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The following device_map keys do not match any submodules")  # query_tokens
@pytest.mark.parametrize("language_model", ["llama", "t5"])
@pytest.mark.parametrize("placement", ["explicit", "max_memory"])
def test_cpu_and_disk_offload_give_the_same_outputs(tmp_path, language_model, placement):
    from accelerate.utils import compute_module_sizes

    model, folder = save_tiny(tmp_path, language_model)
    model.eval()
    batch = model_inputs(model.config, language_model)
    with torch.no_grad():
        expected = model(**batch).logits
        expected_generated = model.generate(**generate_inputs(batch), max_new_tokens=3, do_sample=False)

    if placement == "explicit":
        placement_kwargs = {"device_map": explicit_offload_map(model)}
    else:  # as transformers' test_disk_offload_*: half of the model fits in memory, the rest goes to disk
        model_size = compute_module_sizes(model)[""]
        placement_kwargs = {"device_map": "auto", "max_memory": {"cpu": int(0.5 * model_size)}}
    offloaded = VideoTGBForConditionalGeneration.from_pretrained(
        folder, offload_folder=tmp_path / "offload", **placement_kwargs
    ).eval()
    assert "disk" in set(offloaded.hf_device_map.values())
    assert offloaded.language_projection.weight.device.type == "meta"
    with torch.no_grad():
        logits = offloaded(**batch).logits
        generated = offloaded.generate(**generate_inputs(batch), max_new_tokens=3, do_sample=False)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(generated, expected_generated)


def test_no_split_modules_name_existing_classes():
    model = tiny_model("llama")
    classes = {type(module).__name__ for module in model.modules()}
    no_split = model._no_split_modules  # gathered from every submodel by post_init
    assert {"VideoTGBBridgeLayer", "VideoTGBFlowEmbeddings", "VideoTGBQuestionEmbeddings"} <= set(no_split)
    assert {"LlamaDecoderLayer", "InstructBlipEncoderLayer", "InstructBlipQFormerLayer"} <= set(no_split)
    assert {"VideoTGBBridgeLayer", "VideoTGBFlowEmbeddings", "VideoTGBQuestionEmbeddings"} <= classes


# ---- attention implementations ----------------------------------------------------------------------------------

LANGUAGE_MODEL_AND_QFORMER = [("llama", True), ("llama", False), ("t5", False), ("t5", True)]


def attn_implementations(model) -> dict[str, str]:
    """`_attn_implementation` of every submodule's config (`""` for the model itself)."""
    found = {}
    for name, module in model.named_modules():
        config = getattr(module, "config", None)
        if isinstance(config, PretrainedConfig):
            found[name] = config._attn_implementation
    return found


@pytest.mark.parametrize(("language_model", "qformer_text_input"), LANGUAGE_MODEL_AND_QFORMER)
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attn_implementation_reaches_every_submodule(tmp_path, language_model, qformer_text_input, implementation):
    _, folder = save_tiny(tmp_path, language_model, qformer_text_input=qformer_text_input)
    loaded = VideoTGBForConditionalGeneration.from_pretrained(folder, attn_implementation=implementation)
    found = attn_implementations(loaded)
    assert {"", "vision_model", "qformer", "language_model", "bridge"} <= set(found)
    assert set(found.values()) == {implementation}, found
    assert loaded.config.qformer_config._attn_implementation == implementation

    other = "sdpa" if implementation == "eager" else "eager"
    loaded.set_attn_implementation(other)
    assert set(attn_implementations(loaded).values()) == {other}


@pytest.mark.parametrize(("language_model", "qformer_text_input"), LANGUAGE_MODEL_AND_QFORMER)
def test_eager_matches_sdpa_inference(tmp_path, language_model, qformer_text_input):
    _, folder = save_tiny(tmp_path, language_model, qformer_text_input=qformer_text_input)
    eager = VideoTGBForConditionalGeneration.from_pretrained(folder, attn_implementation="eager").eval()
    sdpa = VideoTGBForConditionalGeneration.from_pretrained(folder, attn_implementation="sdpa").eval()
    batch = model_inputs(eager.config, language_model)
    with torch.no_grad():
        eager_out, sdpa_out = eager(**batch), sdpa(**batch)
    torch.testing.assert_close(eager_out.logits, sdpa_out.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eager_out.start_logits, sdpa_out.start_logits, rtol=1e-5, atol=1e-5)


# ---- inputs_embeds ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("language_model", ["llama", "t5"])
def test_inputs_embeds_matches_input_ids(language_model):
    model = randomize_(tiny_model(language_model), std=0.1)
    batch = model_inputs(model.config, language_model)
    input_ids = batch.pop("input_ids")
    inputs_embeds = model.get_input_embeddings()(input_ids)
    with torch.no_grad():
        from_ids = model(input_ids=input_ids, **batch)
        from_embeds = model(inputs_embeds=inputs_embeds, **batch)
    torch.testing.assert_close(from_embeds.logits, from_ids.logits)
    torch.testing.assert_close(from_embeds.loss, from_ids.loss)
    assert torch.equal(from_embeds.keyframe_indices, from_ids.keyframe_indices)


@pytest.mark.parametrize("language_model", ["llama", "t5"])
def test_generate_from_inputs_embeds_matches_input_ids(language_model):
    model = randomize_(tiny_model(language_model), std=0.1)
    inputs = generate_inputs(model_inputs(model.config, language_model))
    input_ids = inputs.pop("input_ids")
    inputs_embeds = model.get_input_embeddings()(input_ids)
    with torch.no_grad():
        from_ids = model.generate(input_ids=input_ids, **inputs, max_new_tokens=4, do_sample=False)
        from_embeds = model.generate(inputs_embeds=inputs_embeds, **inputs, max_new_tokens=4, do_sample=False)
    assert torch.equal(from_embeds, from_ids)


def test_text_inputs_are_given_exactly_once():
    model = tiny_model("llama")
    batch = model_inputs(model.config, "llama")
    embeds = model.get_input_embeddings()(batch["input_ids"])
    with pytest.raises(ValueError, match="either input_ids or inputs_embeds"):
        model(**batch, inputs_embeds=embeds)
    with pytest.raises(ValueError, match="either input_ids or inputs_embeds"):
        model(**{key: value for key, value in batch.items() if key != "input_ids"})
    with pytest.raises(ValueError, match="either input_ids or inputs_embeds"):
        model.generate(**generate_inputs(batch), inputs_embeds=embeds, max_new_tokens=2)


@pytest.mark.parametrize("name", ["labels", "span_targets", "inputs", "position_ids"])
def test_generate_refuses_arguments_it_would_drop_or_override(name):
    model = tiny_model("llama")
    inputs = generate_inputs(model_inputs(model.config, "llama"))
    with pytest.raises(ValueError, match=name):
        model.generate(**inputs, **{name: inputs["input_ids"]}, max_new_tokens=2)


def test_forward_keeps_the_video_when_language_model_kwargs_are_passed():
    model = randomize_(tiny_model("llama"), std=0.1)
    batch = model_inputs(model.config, "llama")
    with torch.no_grad():
        plain = model(**batch)
        with_kwargs = model(**batch, use_cache=False, output_hidden_states=True)
    torch.testing.assert_close(with_kwargs.logits, plain.logits)
    assert with_kwargs.language_model_outputs.hidden_states is not None
    with pytest.raises(ValueError, match="position_ids"):
        model(**batch, position_ids=torch.arange(batch["input_ids"].shape[1])[None])


# ---- output flags from the config (bridge) ----------------------------------------------------------------------


def tiny_bridge(**overrides) -> VideoTGBBridgeModel:
    from conftest import BRIDGE

    torch.manual_seed(0)
    return VideoTGBBridgeModel(VideoTGBBridgeConfig(**{**BRIDGE, **overrides})).eval()


def bridge_inputs() -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        "flow": torch.randn(2, 6, 2, 32, 32, generator=generator),
        "flow_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2]),
        "input_ids": torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
    }


@pytest.mark.parametrize("mode", ["fusion", "multi_modal"])
def test_bridge_attention_outputs_follow_the_config(mode):
    bridge = tiny_bridge(mode=mode)
    bridge.config._attn_implementation = "eager"  # as transformers' test_attention_outputs
    bridge.config.output_attentions = True
    with torch.no_grad():
        out = bridge(**bridge_inputs())
    layers = len(bridge.encoder.layer)
    assert out.attentions is not None and len(out.attentions) == layers
    assert out.attentions[0].shape == (2, 4, 8, 8)
    assert len(out.cross_attentions) == sum(layer.has_cross_attention for layer in bridge.encoder.layer.values())
    assert out.hidden_states is None
    with torch.no_grad():
        assert bridge(**bridge_inputs(), output_attentions=False).attentions is None


def test_bridge_hidden_states_output_follows_the_config():
    bridge = tiny_bridge()
    bridge.config.output_hidden_states = True
    with torch.no_grad():
        out = bridge(**bridge_inputs())
    assert out.hidden_states is not None and len(out.hidden_states) == len(bridge.encoder.layer) + 1
    assert out.hidden_states[0].shape == (2, 8, 32)
    assert out.attentions is None
    with torch.no_grad():
        assert bridge(**bridge_inputs(), output_hidden_states=False).hidden_states is None


def test_bridge_return_dict_follows_the_config():
    bridge = tiny_bridge()
    bridge.config.return_dict = False
    with torch.no_grad():
        out = bridge(**bridge_inputs())
        as_dict = bridge(**bridge_inputs(), return_dict=True)
    assert isinstance(out, tuple)
    torch.testing.assert_close(out[0], as_dict.start_logits)


# ---- main_input_name --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", [VideoTGBForConditionalGeneration, VideoTGBBridgeModel])
def test_main_input_name_is_the_first_forward_argument(model_class):
    first_argument = list(inspect.signature(model_class.forward).parameters)[1]
    assert model_class.main_input_name == first_argument


# ---- from_pretrained refuses other model types -------------------------------------------------------------------


def tiny_instructblip_folder(tmp_path):
    from transformers import InstructBlipConfig, InstructBlipForConditionalGeneration

    torch.manual_seed(0)
    config = InstructBlipConfig(
        vision_config=dict(VISION), qformer_config=dict(QFORMER), text_config=dict(LLAMA), num_query_tokens=4
    )
    folder = tmp_path / "instructblip"
    InstructBlipForConditionalGeneration(config).save_pretrained(folder)
    return folder


def test_from_pretrained_refuses_a_checkpoint_of_another_type(minilm_path):
    from videotgb.modeling_videotgb import WrongModelTypeError

    with pytest.raises(WrongModelTypeError, match=rf"{minilm_path}.*'bert'") as error:
        VideoTGBForConditionalGeneration.from_pretrained(minilm_path)
    assert isinstance(error.value, ValueError)
    with pytest.raises(WrongModelTypeError, match="'bert'"):
        VideoTGBBridgeModel.from_pretrained(minilm_path)


def test_from_pretrained_points_blip_checkpoints_to_from_blip_and_bert(tmp_path):
    from videotgb.modeling_videotgb import WrongModelTypeError

    folder = tiny_instructblip_folder(tmp_path)
    with pytest.raises(WrongModelTypeError, match="'instructblip'") as error:
        VideoTGBForConditionalGeneration.from_pretrained(folder)
    assert "from_blip_and_bert" in str(error.value) and "videotgb init --vlm" in str(error.value)


def test_the_bridge_loads_from_a_videotgb_checkpoint(tmp_path):
    model, folder = save_tiny(tmp_path)
    bridge = VideoTGBBridgeModel.from_pretrained(folder)
    assert bridge.config.hidden_size == model.config.bridge_config.hidden_size
    assert torch.equal(bridge.span_head.weight, model.bridge.span_head.weight)
    model.bridge.save_pretrained(tmp_path / "bridge")
    with pytest.raises(ValueError, match="'videotgb_bridge'"):
        VideoTGBForConditionalGeneration.from_pretrained(tmp_path / "bridge")


def test_an_explicit_config_is_not_refused(tmp_path):
    model, folder = save_tiny(tmp_path)
    model.bridge.save_pretrained(tmp_path / "bridge")
    loaded = VideoTGBBridgeModel.from_pretrained(tmp_path / "bridge", config=model.config.bridge_config)
    assert torch.equal(loaded.span_head.weight, model.bridge.span_head.weight)


# ---- from_blip_and_bert reports what it loaded ------------------------------------------------------------------


def test_from_blip_and_bert_reports_copied_weights_as_loaded(tmp_path, minilm_path):
    folder = tiny_instructblip_folder(tmp_path)
    transformers_logger = hf_logging.get_logger("transformers.modeling_utils")
    with CaptureLogger(transformers_logger) as transformers_log, CaptureLogger(OUR_LOGGER) as our_log:
        model = VideoTGBForConditionalGeneration.from_blip_and_bert(
            str(folder), str(minilm_path), num_candidate_frames=8, bridge_overrides={"flow_size": 32}
        )
    logged = transformers_log.out + our_log.out
    for key in (
        "bridge.embeddings.word_embeddings.weight",
        "bridge.embeddings.LayerNorm.weight",
        "attention.self.query.weight",  # transformers writes bridge.encoder.layer.{3, 4, 5}.attention.self...
    ):
        assert key not in logged, key
    assert "MISSING" not in logged and "downstream task" not in logged
    for new in ("crossattention", "flow_embeddings", "span_head", "flow_rotary", "question_rotary"):
        assert new in our_log.out, new
    assert f"from {minilm_path}" in our_log.out and f"from {folder}" in our_log.out
    assert "bridge.embeddings" in our_log.out  # named as copied from BERT
    assert transformers_logger.filters == []
    assert model.bridge.encoder.layer["3"].has_cross_attention


def test_from_blip_and_bert_shows_the_held_back_report_when_loading_fails(tmp_path, minilm_path, monkeypatch):
    from transformers import PreTrainedModel

    def fail(self, *args, **kwargs):
        raise RuntimeError("loading failed")

    folder = tiny_instructblip_folder(tmp_path)
    transformers_logger = hf_logging.get_logger("transformers.modeling_utils")
    monkeypatch.setattr(PreTrainedModel, "_initialize_missing_keys", fail)
    with CaptureLogger(transformers_logger) as transformers_log, pytest.raises(RuntimeError, match="loading failed"):
        VideoTGBForConditionalGeneration.from_blip_and_bert(
            str(folder), str(minilm_path), num_candidate_frames=8, bridge_overrides={"flow_size": 32}
        )
    assert transformers_logger.filters == []
    assert "LOAD REPORT" in transformers_log.out
