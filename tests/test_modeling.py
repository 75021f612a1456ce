"""VideoTGB end to end: selection, loss paths with padding, mixed batches, generation, LoRA, dtypes, bad input."""

from __future__ import annotations

import pytest
import torch
from conftest import VOCAB, randomize_, tiny_config, tiny_model, video_batch

from videotgb import VideoTGBConfig, VideoTGBForConditionalGeneration
from videotgb.modeling_videotgb import merge_visual_prefix


def take(batch: dict, row: int, lengths: dict[str, int] | None = None) -> dict:
    """One sample of a padded batch, trimmed to its own lengths (as if it had been batched alone)."""
    lengths = lengths or {}
    sample = {}
    for key, value in batch.items():
        value = value[row : row + 1]
        if key in lengths:
            value = value[:, : lengths[key]]
        sample[key] = value
    return sample


def sample_lengths(batch: dict, row: int) -> dict[str, int]:
    text = int(batch["attention_mask"][row].sum())
    question = int(batch["bridge_attention_mask"][row].sum())
    flow = int(batch["flow_mask"][row].sum())
    return {
        "input_ids": text,
        "attention_mask": text,
        "labels": text,
        "bridge_input_ids": question,
        "bridge_attention_mask": question,
        "qformer_input_ids": question,
        "qformer_attention_mask": question,
        "flow": flow,
        "flow_mask": flow,
    }


@pytest.fixture(scope="module")
def llama_model():
    return randomize_(tiny_model("llama"), std=0.1)


def test_right_padded_llama_batch_equals_each_sample_alone(llama_model):
    config = llama_model.config
    batch = video_batch(config)
    with torch.no_grad():
        batched = llama_model(**batch)
        visual = config.num_visual_tokens
        for row in range(2):
            alone = llama_model(**take(batch, row, sample_lengths(batch, row)))
            length = visual + int(batch["attention_mask"][row].sum())
            assert torch.equal(alone.keyframe_indices, batched.keyframe_indices[row : row + 1])
            assert torch.allclose(alone.logits[0], batched.logits[row, :length], atol=1e-5)


def test_llama_loss_is_the_answer_tokens_cross_entropy(llama_model):
    batch = video_batch(llama_model.config)
    with torch.no_grad():
        out = llama_model(**batch)
    visual = llama_model.config.num_visual_tokens
    logits = out.logits[:, visual:-1]
    targets = batch["labels"][:, 1:]
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=-100)
    assert torch.allclose(out.lm_loss, expected, atol=1e-6)
    assert out.loss is not None and out.span_loss is None


def test_right_padded_t5_batch_equals_each_sample_alone():
    model = randomize_(tiny_model("t5"), std=0.1)
    batch = video_batch(model.config)
    for key in ("qformer_input_ids", "qformer_attention_mask"):
        batch.pop(key)
    labels = torch.tensor([[40, 41, 42, 1], [43, 1, -100, -100]])
    with torch.no_grad():
        batched = model(**batch | {"labels": labels})
        for row in range(2):
            lengths = sample_lengths(batch, row)
            lengths.pop("labels")
            alone = model(**take(batch, row, lengths) | {"labels": labels[row : row + 1, : 4 - 2 * row]})
            assert torch.allclose(alone.logits[0], batched.logits[row, : 4 - 2 * row], atol=1e-5)
    token_losses = torch.nn.functional.cross_entropy(
        batched.logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100
    )
    assert torch.allclose(batched.lm_loss, token_losses, atol=1e-6)


def test_span_loss_joins_the_lm_loss_with_its_weight(llama_model):
    batch = video_batch(llama_model.config)
    targets = torch.tensor([[0.25, 0.5], [float("nan"), float("nan")]])
    with torch.no_grad():
        out = llama_model(**batch, span_targets=targets)
    assert out.span_loss is not None and out.span_loss > 0
    assert torch.allclose(out.loss, out.lm_loss + out.span_loss)
    unweighted_model = tiny_model("llama", span_loss_weight=0.0)
    unweighted_model.load_state_dict(llama_model.state_dict())
    with torch.no_grad():
        unweighted = unweighted_model(**batch, span_targets=targets)
    assert torch.allclose(unweighted.loss, unweighted.lm_loss)


def test_keyframe_indices_bypass_the_bridge(llama_model):
    batch = video_batch(llama_model.config)
    keyframes = torch.tensor([[0, 7], [3, 3]])
    with torch.no_grad():
        out = llama_model(**batch, keyframe_indices=keyframes)
        with_span = llama_model(**batch, keyframe_indices=keyframes, span_targets=torch.tensor([[0.0, 1.0]] * 2))
    assert torch.equal(out.keyframe_indices, keyframes) and out.start_logits is None
    assert with_span.start_logits is not None
    assert torch.allclose(out.logits, with_span.logits)


def test_the_bridge_choice_changes_what_the_llm_sees(llama_model):
    batch = video_batch(llama_model.config)
    with torch.no_grad():
        chosen = llama_model(**batch)
        other = (chosen.keyframe_indices + 3) % 8
        forced = llama_model(**batch, keyframe_indices=other)
    assert not torch.allclose(chosen.logits, forced.logits, atol=1e-4)


def test_training_mode_samples_spans_and_gradients_reach_the_bridge():
    model = tiny_model("llama")
    model.train()
    batch = video_batch(model.config)
    out = model(**batch, span_targets=torch.tensor([[0.1, 0.4], [0.2, 0.9]]))
    out.loss.backward()
    assert model.bridge.span_head.weight.grad.abs().sum() > 0
    assert model.qformer.encoder.layer[0].attention.attention.query.weight.grad is not None
    assert model.bridge.encoder.flow_rotary.weight.grad is None


def test_mixed_batch_of_video_image_and_text_only(llama_model):
    config = llama_model.config
    videos = video_batch(config, flow_lengths=(8, 5, 6), question_lengths=(5, 3, 4), text_lengths=(6, 4, 5))
    batch = dict(videos)
    batch["frame_mask"] = torch.tensor([[1] * 8, [1] + [0] * 7, [0] * 8])
    batch["flow_mask"] = torch.tensor([[1] * 8, [0] * 8, [0] * 8])
    batch["flow"] = batch["flow"] * batch["flow_mask"][..., None, None, None]
    with torch.no_grad():
        mixed = llama_model(**batch)
        video = llama_model(**take(videos, 0, sample_lengths(videos, 0)))
        image_inputs = take(videos, 1, sample_lengths(videos, 1))
        image_inputs.pop("flow"), image_inputs.pop("flow_mask")
        image_inputs["pixel_values"] = image_inputs["pixel_values"][:, :1]
        image = llama_model(**image_inputs)
        text_inputs = take(videos, 2, sample_lengths(videos, 2))
        for key in ("flow", "flow_mask", "pixel_values"):
            text_inputs.pop(key)
        text = llama_model(**text_inputs)
        plain_lm = llama_model.language_model(input_ids=text_inputs["input_ids"]).logits
    assert torch.isfinite(mixed.logits).all() and torch.isfinite(mixed.loss)
    assert mixed.visual_attention_mask.tolist() == [[1] * 8, [1] * 8, [0] * 8]
    assert mixed.keyframe_indices[1].tolist() == [0, 0]
    visual = config.num_visual_tokens
    assert torch.allclose(mixed.logits[0], video.logits[0], atol=1e-5)
    assert torch.allclose(mixed.logits[1, : visual + 4], image.logits[0], atol=1e-5)
    assert torch.allclose(mixed.logits[2, : visual + 5], text.logits[0], atol=1e-5)
    # a text-only sample is the language model alone: masked visual positions do not leak in
    assert torch.allclose(text.logits[0, visual:], plain_lm[0], atol=1e-5)


def test_text_only_batch_with_mean_aggregation_has_no_nan():
    model = tiny_model("llama", frame_aggregation="mean")
    batch = video_batch(model.config)
    model.train()
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_image_batch_as_four_dimensional_pixel_values():
    model = tiny_model("llama", frame_aggregation="mean")
    batch = video_batch(model.config)
    images = batch["pixel_values"][:, 0]
    with torch.no_grad():
        four = model(pixel_values=images, qformer_input_ids=batch["qformer_input_ids"], input_ids=batch["input_ids"])
        five = model(
            pixel_values=images[:, None], qformer_input_ids=batch["qformer_input_ids"], input_ids=batch["input_ids"]
        )
    assert torch.equal(four.logits, five.logits)


def test_merge_visual_prefix_places_visual_tokens_after_left_padding():
    visual = torch.arange(2 * 2 * 1, dtype=torch.float).view(2, 2, 1) + 100
    text = torch.arange(2 * 3 * 1, dtype=torch.float).view(2, 3, 1)
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    embeds, merged, labels = merge_visual_prefix(
        visual, torch.tensor([[1, 1], [0, 0]]), text, mask, torch.tensor([[-100, 7, 8], [6, 7, 8]])
    )
    assert embeds[..., 0].tolist() == [[0, 100, 101, 1, 2], [102, 103, 3, 4, 5]]
    assert merged.tolist() == [[0, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    assert labels.tolist() == [[-100, -100, -100, -100, 8], [-100, -100, -100, 7, 8]]


def left_pad(batch: dict) -> dict:
    """The same prompts padded on the left, as for batched generation."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    order = torch.argsort(mask, dim=1, stable=True)
    return batch | {"input_ids": ids.gather(1, order), "attention_mask": mask.gather(1, order)}


def test_batched_greedy_generation_equals_one_by_one(llama_model):
    batch = video_batch(llama_model.config)
    batch.pop("labels")
    batched_inputs = left_pad(batch)
    with torch.no_grad():
        batched = llama_model.generate(
            **batched_inputs, max_new_tokens=5, do_sample=False, return_dict_in_generate=True
        )
        for row in range(2):
            single = llama_model.generate(
                **take(batch, row, sample_lengths(batch, row)), max_new_tokens=5, do_sample=False
            )
            assert single.shape == (1, 5)
            assert torch.equal(single[0], batched.sequences[row])
    assert batched.keyframe_indices.shape == (2, 2)


def test_generate_with_t5_streamer_and_generation_config(llama_model):
    from transformers import GenerationConfig
    from transformers.generation.streamers import BaseStreamer

    class Collect(BaseStreamer):
        def __init__(self):
            self.tokens = []

        def put(self, value):
            self.tokens.append(value.clone())

        def end(self):
            self.ended = True

    model = randomize_(tiny_model("t5"), std=0.1)
    batch = video_batch(model.config)
    inputs = take(batch, 0, sample_lengths(batch, 0))
    for key in ("labels", "qformer_input_ids", "qformer_attention_mask"):
        inputs.pop(key)
    streamer = Collect()
    generation_config = GenerationConfig(
        max_new_tokens=4, do_sample=False, decoder_start_token_id=0, eos_token_id=None
    )
    out = model.generate(**inputs, generation_config=generation_config, streamer=streamer)
    assert out.shape == (1, 5) and out[0, 0] == 0
    assert streamer.ended and torch.equal(torch.cat([t.view(-1) for t in streamer.tokens]), out[0])


def test_generation_config_on_the_model_is_honoured(llama_model):
    batch = video_batch(llama_model.config)
    inputs = take(batch, 0, sample_lengths(batch, 0))
    inputs.pop("labels")
    llama_model.generation_config.max_new_tokens = 3
    llama_model.generation_config.do_sample = False
    try:
        assert llama_model.generate(**inputs).shape == (1, 3)
    finally:
        llama_model.generation_config.max_new_tokens = None


def test_gradient_checkpointing_matches_plain_backward():
    batch = video_batch(tiny_config())
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(
            "llama",
            seed=5,
            bridge_config=no_dropout,
            qformer_config={**tiny_config().qformer_config.to_dict(), **no_dropout},
        ).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        out = model(
            **batch, keyframe_indices=torch.tensor([[1, 4], [2, 6]]), span_targets=torch.tensor([[0.0, 0.5]] * 2)
        )
        out.loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], atol=1e-6), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_loading_keeps_query_tokens_in_fp32_and_runs(tmp_path, dtype):
    model = tiny_model("llama")
    model.save_pretrained(tmp_path)
    loaded = VideoTGBForConditionalGeneration.from_pretrained(tmp_path, dtype=dtype).eval()
    assert loaded.query_tokens.dtype == torch.float32
    assert loaded.language_model.lm_head.weight.dtype == dtype
    assert loaded.bridge.span_head.weight.dtype == dtype
    batch = video_batch(loaded.config)
    batch["pixel_values"] = batch["pixel_values"].to(dtype)
    batch["flow"] = batch["flow"].to(dtype)
    with torch.no_grad():
        out = loaded(**batch)
        generated = loaded.generate(**{k: v for k, v in left_pad(batch).items() if k != "labels"}, max_new_tokens=2)
    assert torch.isfinite(out.loss) and generated.shape == (2, 2)


def test_lora_on_the_language_model_only_saves_reloads_and_merges(tmp_path, llama_model):
    from peft import LoraConfig, PeftModel, get_peft_model

    batch = video_batch(llama_model.config)
    base = tiny_model("llama")
    base.load_state_dict(llama_model.state_dict())
    lora = get_peft_model(
        base, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=r".*language_model.*\.(q_proj|v_proj)$")
    )
    adapted = [name for name, _ in lora.named_parameters() if "lora_" in name]
    assert adapted and all(".language_model." in name for name in adapted)
    for name, parameter in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    lora.eval()
    with torch.no_grad():
        expected = lora(**batch).logits
    lora.save_pretrained(tmp_path)

    fresh = tiny_model("llama")
    fresh.load_state_dict(llama_model.state_dict())
    reloaded = PeftModel.from_pretrained(fresh, tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, expected, atol=1e-5)
        merged = reloaded.merge_and_unload()
        assert torch.allclose(merged(**batch).logits, expected, atol=1e-4)
        assert not torch.allclose(llama_model(**batch).logits, expected, atol=1e-3)


def test_config_defaults_describe_videotgb_7b():
    config = VideoTGBConfig()
    assert config.text_config.model_type == "llama" and config.text_config.hidden_size == 4096
    assert config.vision_config.hidden_size == 1408 and config.qformer_config.encoder_hidden_size == 1408
    assert config.bridge_config.hidden_size == 768 and config.bridge_config.fusion_layer == 6
    assert (config.num_candidate_frames, config.num_keyframes, config.num_query_tokens) == (32, 4, 32)
    assert config.qformer_text_input and config.eval_selection == "argmax"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_keyframes": 9, "num_candidate_frames": 8}, "num_keyframes"),
        ({"frame_aggregation": "max"}, "frame_aggregation"),
        ({"eval_selection": "gumbel"}, "eval_selection"),
        ({"num_query_tokens": 0}, "num_query_tokens"),
        ({"span_loss_weight": -1.0}, "span_loss_weight"),
        ({"text_config": {"model_type": "vit"}}, "text_config"),
    ],
)
def test_config_validation(fields, message):
    with pytest.raises(ValueError, match=message):
        VideoTGBConfig(**fields)


def test_config_round_trip(tmp_path):
    config = tiny_config("t5", eval_selection="sample", bridge_config={"mode": "multi_modal", "rotary_init": "normal"})
    config.save_pretrained(tmp_path)
    loaded = VideoTGBConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.bridge_config.mode == "multi_modal" and not loaded.use_decoder_only_language_model


class TestBadInput:
    @pytest.fixture(scope="class")
    def model(self):
        return tiny_model("llama")

    @pytest.fixture
    def batch(self, model):
        return video_batch(model.config)

    def test_empty_and_misshapen_text(self, model, batch):
        with pytest.raises(ValueError, match="input_ids must have shape"):
            model(**batch | {"input_ids": torch.zeros(0, 3, dtype=torch.long)})
        with pytest.raises(ValueError, match="input_ids must have shape"):
            model(**batch | {"input_ids": torch.zeros(5, dtype=torch.long)})

    def test_wrong_pixel_rank_and_batch(self, model, batch):
        with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch=2, frames, 3, 28, 28\)"):
            model(**batch | {"pixel_values": torch.zeros(2, 8, 28, 28, 3, 1)})
        with pytest.raises(ValueError, match="pixel_values must have shape"):
            model(**batch | {"pixel_values": batch["pixel_values"][:1]})

    def test_frame_count_disagreeing_with_the_config(self, model, batch):
        with pytest.raises(ValueError, match="more than num_candidate_frames=8"):
            model(**batch | {"pixel_values": torch.zeros(2, 9, 3, 28, 28)})
        frame_mask = torch.tensor([[1] * 8, [1] * 6 + [0] * 2])
        with pytest.raises(ValueError, match="sample 1 has flow but 6 frames"):
            model(**batch | {"frame_mask": frame_mask})

    def test_flow_that_does_not_fit_the_bridge(self, model, batch):
        with pytest.raises(ValueError, match="flow_size=32"):
            model(**batch | {"flow": torch.zeros(2, 8, 2, 64, 64)})
        with pytest.raises(ValueError, match="bridge_input_ids"):
            model(**{k: v for k, v in batch.items() if k != "bridge_input_ids"})
        with pytest.raises(ValueError, match="without pixel_values"):
            model(**{k: v for k, v in batch.items() if k != "pixel_values"})

    def test_keyframe_indices_of_the_wrong_shape_or_range(self, model, batch):
        with pytest.raises(ValueError, match=r"\(batch, num_keyframes\) = \(2, 2\)"):
            model(**batch | {"keyframe_indices": torch.zeros(2, 3, dtype=torch.long)})
        with pytest.raises(ValueError, match=r"keyframe_indices\[1\]"):
            model(**batch | {"keyframe_indices": torch.tensor([[0, 1], [2, 8]])})

    def test_masks_must_be_prefixes(self, model, batch):
        with pytest.raises(ValueError, match="frame_mask must mark a prefix"):
            model(**batch | {"frame_mask": torch.tensor([[0] + [1] * 7] * 2)})
        with pytest.raises(ValueError, match="span_targets must have shape"):
            model(**batch | {"span_targets": torch.zeros(2, 3)})


def test_pickled_weights_are_refused_unless_asked_for(tmp_path):
    from transformers import AutoModel

    model = tiny_model("llama")
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(OSError, match="reads safetensors weights only"):
        VideoTGBForConditionalGeneration.from_pretrained(tmp_path)
    with pytest.raises(OSError, match="reads safetensors weights only"):
        AutoModel.from_pretrained(tmp_path, trust_remote_code=True)
    loaded = VideoTGBForConditionalGeneration.from_pretrained(tmp_path, use_safetensors=False)
    assert torch.equal(loaded.query_tokens, model.query_tokens)


def without_media(batch: dict, kind: str) -> dict:
    """`batch` (of `video_batch`) as images (first frame, no flow), text only, or with given keyframes."""
    batch = dict(batch)
    if kind in ("image", "text"):
        batch.pop("flow"), batch.pop("flow_mask")
    if kind == "image":
        batch["pixel_values"] = batch["pixel_values"][:, :1]
    if kind == "text":
        batch.pop("pixel_values")
    if kind == "keyframes":
        batch["keyframe_indices"] = torch.tensor([[0, 3], [1, 7]])
    return batch


def loss_and_gradients(model, batch: dict, synced_gpus: bool):
    model.zero_grad(set_to_none=True)
    out = model(**batch, synced_gpus=synced_gpus)
    out.loss.backward()
    return out, {name: parameter.grad for name, parameter in model.named_parameters()}


@pytest.mark.parametrize("language_model", ["llama", "t5"])
def test_synced_gpus_runs_every_module_without_changing_outputs_or_gradients(language_model):
    """What ZeRO-3 needs: whatever a batch holds, the same modules run and the same parameters get gradients, and
    what the batch did not need adds exactly zero to the loss and to every gradient."""
    model = randomize_(tiny_model(language_model), std=0.1)
    videos = video_batch(model.config)
    _, video_gradients = loss_and_gradients(model, videos, synced_gpus=True)
    with_gradient = {name for name, gradient in video_gradients.items() if gradient is not None}
    assert any(name.startswith("bridge.") for name in with_gradient)  # the keyframe-selecting bridge too
    for kind in ("video", "image", "text", "keyframes"):
        batch = without_media(videos, kind)
        plain, plain_gradients = loss_and_gradients(model, batch, synced_gpus=False)
        synced, synced_gradients = loss_and_gradients(model, batch, synced_gpus=True)
        assert torch.equal(plain.loss, synced.loss) and torch.equal(plain.logits, synced.logits), kind
        assert {name for name, gradient in synced_gradients.items() if gradient is not None} == with_gradient, kind
        for name, gradient in plain_gradients.items():
            if gradient is None:
                assert synced_gradients[name] is None or not synced_gradients[name].any(), (kind, name)
            else:
                assert torch.equal(gradient, synced_gradients[name]), (kind, name)
    assert not model.runs_every_module()  # by default only several processes under ZeRO-3 or FSDP


def test_span_targets_without_a_target_need_no_flow_and_give_no_span_loss():
    """Self-refinement passes a `(batch, 2)` span target of NaN rows for a batch of images and text (no video, so no
    flow): there is no span loss then, the LM loss is that of a forward without targets, and under `synced_gpus`
    the bridge still runs (on its placeholder) and gets zero gradients, as for any other batch."""
    model = randomize_(tiny_model("llama"), std=0.1)
    videos = video_batch(model.config)
    _, video_gradients = loss_and_gradients(model, videos | {"span_targets": torch.tensor([[0.1, 0.4]] * 2)}, True)
    with_gradient = {name for name, gradient in video_gradients.items() if gradient is not None}
    untargeted = torch.full((2, 2), float("nan"))
    for kind in ("image", "text"):
        batch = without_media(videos, kind)
        plain, _ = loss_and_gradients(model, batch, synced_gpus=True)
        out, gradients = loss_and_gradients(model, batch | {"span_targets": untargeted}, synced_gpus=True)
        assert out.span_loss is None and out.start_logits is None, kind
        assert torch.equal(out.loss, plain.loss) and torch.equal(out.loss, out.lm_loss), kind
        assert {name for name, gradient in gradients.items() if gradient is not None} == with_gradient, kind
        assert all(not gradients[name].any() for name in with_gradient if name.startswith("bridge.")), kind
        with pytest.raises(ValueError, match=r"span_targets rows \[1\] hold targets, which need flow"):
            model(**batch, span_targets=torch.tensor([[float("nan")] * 2, [0.1, 0.4]]))
