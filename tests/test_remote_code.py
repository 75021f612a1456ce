"""A saved VideoTGB folder loads through transformers' Auto classes with remote code, in a fresh process that cannot
import the `videotgb` package nor the optional dependencies (PyAV, OpenCV, DeepSpeed), offline."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from conftest import BLOCK_OPTIONAL_IMPORTS, randomize_, run_fresh_python, tiny_model, video_batch
from safetensors.torch import save_file

FRESH_PROCESS = BLOCK_OPTIONAL_IMPORTS + textwrap.dedent(
    """
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

    folder, tensors_file = sys.argv[1], sys.argv[2]
    data = load_file(tensors_file)
    inputs = {key: value for key, value in data.items() if not key.startswith("expected_")}

    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    assert type(config).__name__ == "VideoTGBConfig", type(config)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    same = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
    assert type(same).__name__ == type(model).__name__

    with torch.no_grad():
        logits = model(**inputs).logits
        generate_inputs = {key: value for key, value in inputs.items() if key != "labels"}
        generated = model.generate(**generate_inputs, max_new_tokens=4, do_sample=False)
    difference = (logits - data["expected_logits"]).abs().max().item()
    assert difference == 0.0, difference
    assert torch.equal(generated, data["expected_generated"]), (generated, data["expected_generated"])
    print("FRESH-PROCESS-OK", config.text_config.model_type)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("language_model", ["llama", "t5"])
def test_auto_classes_load_a_saved_folder_in_a_fresh_process(tmp_path, language_model):
    model = randomize_(tiny_model(language_model), std=0.1)
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)

    assert {"configuration_videotgb.py", "modeling_videotgb.py", "keyframes.py", "model.safetensors"} <= {
        path.name for path in folder.iterdir()
    }
    assert not list(folder.glob("*.bin"))
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_videotgb.VideoTGBConfig",
        "AutoModel": "modeling_videotgb.VideoTGBForConditionalGeneration",
        "AutoModelForImageTextToText": "modeling_videotgb.VideoTGBForConditionalGeneration",
    }

    batch = video_batch(model.config)
    if language_model == "t5":
        del batch["qformer_input_ids"], batch["qformer_attention_mask"]
    # one sample: `generate` needs no padding convention here
    inputs = {
        key: value[:1, : int(batch["attention_mask"][0].sum())]
        if key in ("input_ids", "attention_mask", "labels")
        else value[:1]
        for key, value in batch.items()
    }
    with torch.no_grad():
        expected_logits = model(**inputs).logits
        expected_generated = model.generate(
            **{k: v for k, v in inputs.items() if k != "labels"}, max_new_tokens=4, do_sample=False
        )
    tensors = tmp_path / "tensors.safetensors"
    save_file(
        {
            **{k: v.contiguous() for k, v in inputs.items()},
            "expected_logits": expected_logits,
            "expected_generated": expected_generated,
        },
        tensors,
    )

    result = run_fresh_python(FRESH_PROCESS, str(folder), str(tensors), tmp_path=tmp_path)
    assert f"FRESH-PROCESS-OK {language_model}" in result.stdout
