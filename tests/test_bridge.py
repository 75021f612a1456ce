"""The Temporal Grounding Bridge: modes, padding / EOS handling, rotary tables, span loss, BERT weights."""

from __future__ import annotations

import pytest
import torch
from conftest import BRIDGE, randomize_

from videotgb import VideoTGBBridgeConfig, VideoTGBBridgeModel
from videotgb.modeling_videotgb import (
    IGNORE_INDEX,
    apply_rotary,
    sinusoidal_rotary_table,
    span_cross_entropy,
    span_targets_to_positions,
)


def make_bridge(seed: int = 0, **overrides) -> VideoTGBBridgeModel:
    torch.manual_seed(seed)
    bridge = VideoTGBBridgeModel(VideoTGBBridgeConfig(**{**BRIDGE, **overrides})).eval()
    return bridge


def flows(lengths, steps=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    steps = steps or max(lengths)
    mask = torch.tensor([[1] * n + [0] * (steps - n) for n in lengths])
    return torch.randn(len(lengths), steps, 2, 32, 32, generator=generator), mask


QUESTION = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]])
QUESTION_MASK = (QUESTION != 0).long()


@pytest.mark.parametrize(("mode", "layers"), [("fusion", ["2", "3"]), ("multi_modal", ["0", "1", "2", "3"])])
def test_modes_build_the_right_layers_and_shapes(mode, layers):
    bridge = make_bridge(mode=mode)
    assert list(bridge.encoder.layer.keys()) == layers
    assert [layer.has_cross_attention for layer in bridge.encoder.layer.values()] == [int(i) >= 2 for i in layers]
    flow, mask = flows([8, 5])
    out = bridge(
        flow, QUESTION, flow_mask=mask, attention_mask=QUESTION_MASK, output_hidden_states=True, output_attentions=True
    )
    assert out.start_logits.shape == out.end_logits.shape == (2, 8)
    assert out.last_hidden_state.shape == (2, 10, 32)
    assert len(out.hidden_states) == len(layers) + 1
    assert len(out.cross_attentions) == 2


def test_padding_does_not_change_valid_positions_and_is_masked():
    bridge = randomize_(make_bridge(), std=0.1)
    flow, mask = flows([8, 5])
    with torch.no_grad():
        batched = bridge(flow, QUESTION, flow_mask=mask, attention_mask=QUESTION_MASK)
        alone = bridge(flow[1:, :5], QUESTION[1:, :3])
        garbage = flow.clone()
        garbage[1, 5:] = 100.0
        with_garbage = bridge(garbage, QUESTION, flow_mask=mask, attention_mask=QUESTION_MASK)
    assert torch.allclose(batched.start_logits[1, :5], alone.start_logits[0], atol=1e-5)
    assert torch.allclose(batched.end_logits[1, :5], alone.end_logits[0], atol=1e-5)
    assert torch.allclose(batched.start_logits, with_garbage.start_logits, atol=1e-5)
    assert (batched.start_logits[1, 5:] == torch.finfo(torch.float32).min).all()


def test_eos_is_written_right_after_each_video():
    bridge = make_bridge()
    flow, mask = flows([8, 5])
    embeddings = bridge.flow_embeddings
    with torch.no_grad():
        sequence = embeddings(flow, mask.sum(-1))
        expected_eos = embeddings.layer_norm(embeddings.eos_embedding + embeddings.position_embeddings.weight[6])
        expected_bos = embeddings.layer_norm(embeddings.bos_embedding + embeddings.position_embeddings.weight[0])
    assert torch.allclose(sequence[1, 6], expected_eos, atol=1e-6)
    assert torch.allclose(sequence[0, 0], expected_bos, atol=1e-6)
    assert not torch.allclose(sequence[0, 6], expected_eos, atol=1e-3)


@pytest.mark.parametrize("mode", ["fusion", "multi_modal"])
def test_the_question_changes_the_spans(mode):
    bridge = randomize_(make_bridge(mode=mode), std=0.1)
    flow, mask = flows([6, 6])
    with torch.no_grad():
        first = bridge(flow, QUESTION[:1].expand(2, -1), flow_mask=mask).start_logits
        second = bridge(flow, torch.tensor([[40, 41, 42, 43]] * 2), flow_mask=mask).start_logits
    assert not torch.allclose(first, second, atol=1e-4)


def test_sinusoidal_rotary_tables_encode_relative_positions():
    bridge = make_bridge()
    table = bridge.encoder.flow_rotary.weight
    assert torch.allclose(table, sinusoidal_rotary_table(64, 8))
    assert not table.requires_grad
    generator = torch.Generator().manual_seed(0)
    query, key = torch.randn(2, 1, 1, 1, 8, generator=generator)
    rotated_query = apply_rotary(query.expand(1, 1, 20, 8), table[:20])
    rotated_key = apply_rotary(key.expand(1, 1, 20, 8), table[:20])
    scores = rotated_query[0, 0] @ rotated_key[0, 0].T  # (20, 20)
    assert torch.allclose(scores[2, 5], scores[10, 13], atol=1e-5)
    assert torch.allclose(scores[7, 3], scores[16, 12], atol=1e-5)


def test_normal_rotary_init_reproduces_the_original_random_tables():
    bridge = make_bridge(rotary_init="normal", max_position_embeddings=512, max_text_positions=512)
    table = bridge.encoder.flow_rotary.weight
    assert abs(table.std().item() - 0.02) < 0.002
    assert not torch.allclose(table, sinusoidal_rotary_table(512, 8))


def test_rotary_tables_are_frozen_and_survive_a_save_and_reload(tmp_path):
    bridge = make_bridge(rotary_init="normal")
    before = {name: bridge.encoder.get_submodule(name).weight.clone() for name in ("flow_rotary", "question_rotary")}
    bridge.train()
    optimizer = torch.optim.SGD([p for p in bridge.parameters() if p.requires_grad], lr=1.0)
    flow, mask = flows([8, 5])
    out = bridge(flow, QUESTION, flow_mask=mask)
    (out.start_logits[mask.bool()].sum() + out.end_logits[mask.bool()].sum()).backward()
    optimizer.step()
    bridge.save_pretrained(tmp_path)
    reloaded = VideoTGBBridgeModel.from_pretrained(tmp_path)
    # a sinusoidal config must not overwrite stored random tables when loading
    assert reloaded.config.rotary_init == "normal"
    for name, table in before.items():
        assert torch.equal(reloaded.encoder.get_submodule(name).weight, table)
    sinusoidal_config = reloaded.config
    sinusoidal_config.rotary_init = "sinusoidal"
    again = VideoTGBBridgeModel.from_pretrained(tmp_path, config=sinusoidal_config)
    assert torch.equal(again.encoder.flow_rotary.weight, before["flow_rotary"])


def test_span_cross_entropy_and_targets():
    start = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    end = torch.tensor([[0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    loss = span_cross_entropy(start, end, torch.tensor([0, IGNORE_INDEX]), torch.tensor([2, IGNORE_INDEX]))
    expected = (
        torch.nn.functional.cross_entropy(start[:1], torch.tensor([0]))
        + torch.nn.functional.cross_entropy(end[:1], torch.tensor([2]))
    ) / 2
    assert torch.allclose(loss, expected)
    assert span_cross_entropy(start, end, torch.full((2,), IGNORE_INDEX), torch.full((2,), IGNORE_INDEX)).item() == 0.0

    targets = torch.tensor([[0.0, 1.0], [0.5, 0.75], [float("nan"), 0.2], [0.1, 0.2]])
    positions = span_targets_to_positions(targets, torch.tensor([8, 5, 8, 0]))
    assert positions.tolist() == [[0, 7], [2, 3], [IGNORE_INDEX] * 2, [IGNORE_INDEX] * 2]


def test_sdpa_and_eager_attention_agree():
    flow, mask = flows([8, 5])
    eager = make_bridge(seed=3)
    eager.config._attn_implementation = "eager"
    sdpa = make_bridge(seed=3)
    sdpa.config._attn_implementation = "sdpa"
    with torch.no_grad():
        a = eager(flow, QUESTION, flow_mask=mask, attention_mask=QUESTION_MASK).start_logits
        b = sdpa(flow, QUESTION, flow_mask=mask, attention_mask=QUESTION_MASK).start_logits
    assert torch.allclose(a[mask.bool()], b[mask.bool()], atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    flow, mask = flows([8, 5])
    grads = []
    for checkpointing in (False, True):
        bridge = make_bridge(seed=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
        if checkpointing:
            bridge.activation_checkpointing_enable()
            assert all(layer.gradient_checkpointing for layer in bridge.encoder.layer.values())
        out = bridge(flow, QUESTION, flow_mask=mask, attention_mask=QUESTION_MASK)
        out.start_logits[mask.bool()].sum().backward()
        grads.append(bridge.flow_embeddings.patch_projection.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_bert_weights_load_into_the_layers_the_bridge_builds(minilm_path):
    from safetensors.torch import load_file
    from transformers import AutoConfig

    bert_config = AutoConfig.from_pretrained(minilm_path)
    bridge = make_bridge(
        hidden_size=bert_config.hidden_size,
        intermediate_size=bert_config.intermediate_size,
        num_attention_heads=bert_config.num_attention_heads,
        num_hidden_layers=bert_config.num_hidden_layers,
        vocab_size=bert_config.vocab_size,
        fusion_layer=4,
    )
    bert = load_file(minilm_path / "model.safetensors")
    new = bridge.load_bert_weights({"bert." + key: value for key, value in bert.items()})
    assert torch.equal(bridge.encoder.layer["5"].output.dense.weight, bert["encoder.layer.5.output.dense.weight"])
    assert any(".crossattention." in key for key in new) and "span_head.weight" in new
    assert not any(key.startswith("encoder.layer.3.") for key in bridge.state_dict())

    with pytest.raises(ValueError, match="lacks"):
        bridge.load_bert_weights({key: value for key, value in bert.items() if "layer.5." not in key})
    small = make_bridge()
    with pytest.raises(ValueError, match="has shape"):
        small.load_bert_weights(bert)


@pytest.mark.parametrize(
    ("flow_shape", "message"),
    [
        ((2, 8, 2, 16, 16), "flow_size=32"),
        ((2, 8, 3, 32, 32), r"\(batch, steps, 2, 32, 32\)"),
        ((2, 63, 2, 32, 32), "at most 62"),
    ],
)
def test_bad_flow_is_rejected(flow_shape, message):
    bridge = make_bridge()
    with pytest.raises(ValueError, match=message):
        bridge(torch.zeros(flow_shape), QUESTION)


def test_bad_masks_and_questions_are_rejected():
    bridge = make_bridge()
    flow, _ = flows([8, 5])
    with pytest.raises(ValueError, match="prefix"):
        bridge(flow, QUESTION, flow_mask=torch.tensor([[1] * 8, [0, 1] * 4]))
    with pytest.raises(ValueError, match="flow_mask must have shape"):
        bridge(flow, QUESTION, flow_mask=torch.ones(2, 7))
    with pytest.raises(ValueError, match="batch=2"):
        bridge(flow, QUESTION[:1])
    with pytest.raises(ValueError, match="max_text_positions"):
        bridge(flow, torch.ones(2, 65, dtype=torch.long))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mode": "text"}, "mode"),
        ({"fusion_layer": 4}, "fusion_layer"),
        ({"flow_size": 30}, "flow_patch_size"),
        ({"num_attention_heads": 5}, "multiple of num_attention_heads"),
        ({"rotary_init": "zeros"}, "rotary_init"),
        ({"hidden_size": 0}, "hidden_size"),
    ],
)
def test_bridge_config_validation(fields, message):
    with pytest.raises(ValueError, match=message):
        VideoTGBBridgeConfig(**{**BRIDGE, **fields})
