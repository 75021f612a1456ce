"""The full-size VideoTGB-7B architecture on one GPU, random weights in bf16: per-video answer latency and peak memory
for bridge-4, uniform-4 and dense-32, optical-flow cost per video (RAFT-large on the GPU against DIS on the CPU), and a
few DeepSpeed ZeRO-2 training steps. One command, under 8 minutes on one H100; writes ``gpu_full_size.json`` and
``gpu_full_size.md`` into ``--out``.

Sizes (built in code, nothing downloaded): InstructBLIP-Vicuna-7B's EVA ViT-g/14 (1408 wide, 39 layers, 16 heads,
224 px frames), Q-Former (768 wide, 12 layers, cross-attention every 2nd layer, 32 queries) and Vicuna-7B (LLaMA,
4096 wide, 32 layers, 32,001 tokens); a BERT-base bridge (768 wide, 12 layers with cross-attention from layer 6, all
12 run as in the released checkpoints) reading 224 px flow in 16 px patches; 32 candidate frames, K = 4, 64 flow steps.
Weights are drawn at random directly on the GPU in bf16 (the speed and memory do not depend on their values).

Sections:

- ``inference``: one video (batch 1), candidates and flow given as tensors (flow precomputed), greedy answer of
  ``--new-tokens`` tokens: ``bridge-4`` (the bridge picks 4 of the 32 candidates), ``uniform-4`` (no flow: the
  candidates' bin midpoints), ``dense-32`` (all 32 candidates, 32 x 32 visual tokens: the model's `num_keyframes` set
  to 32 for this mode, as the synthetic evaluation's dense mode loads it). Median latency over ``--repeats`` and the
  peak memory allocated during the answer (above the weights, and in all);
- ``flow``: the 64 flow steps of one video from 224 px frames: `videotgb.optical_flow.compute_flow` with RAFT-large
  (torchvision, random weights, 20 refinement iterations) on the GPU, and OpenCV DIS on the CPU;
- ``deepspeed_zero2``: `deepspeed.initialize` with the package's ``zero2`` configuration (its "auto" values filled as
  `transformers.Trainer` fills them: bf16, micro-batch ``--train-batch-size``, no gradient accumulation), one process
  (world size 1), the ``instruct`` stage's trainable modules (Q-Former, query tokens, projection) and AdamW: seconds
  per step (forward + backward + step) after one untimed step, and peak memory.

``--tiny`` runs the same code with tiny sizes on the CPU in fp32 (DeepSpeed with its CPU accelerator and the gloo
backend), to test the script without a GPU; without ``--tiny`` it stops at once when no CUDA device is present.

Usage::

    python benchmarks/gpu_full_size.py                        # on a machine with one CUDA GPU (< 8 min on an H100)
    python benchmarks/gpu_full_size.py --tiny --out /tmp/gpu  # the same path, tiny, on the CPU (~1 min)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("inference", "flow", "deepspeed_zero2")
MODES = ("bridge-4", "uniform-4", "dense-32")
PROMPT_LENGTH, ANSWER_LENGTH, QUESTION_LENGTH = 48, 16, 16


def model_config(tiny: bool, candidates: int, keyframes: int):
    """VideoTGB-7B's `VideoTGBConfig` (InstructBLIP-Vicuna-7B + BERT-base bridge), or its tiny stand-in."""
    from videotgb import VideoTGBConfig

    if tiny:
        small = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
        vision = {**small, "image_size": 64, "patch_size": 8}
        qformer = {**small, "vocab_size": 30523, "cross_attention_frequency": 2}
        text = {**small, "num_key_value_heads": 4}
        bridge = {**small, "num_hidden_layers": 4, "fusion_layer": 2, "flow_size": 32, "flow_patch_size": 8}
        queries = 4
    else:
        vision = {
            "hidden_size": 1408,
            "intermediate_size": 6144,
            "num_hidden_layers": 39,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
            "qkv_bias": True,
        }
        qformer = {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "vocab_size": 30523,
            "cross_attention_frequency": 2,
        }
        text = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32}
        bridge = {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "fusion_layer": 6,
            "flow_size": 224,
            "flow_patch_size": 16,
        }
        queries = 32
    return VideoTGBConfig(
        vision_config=vision,
        qformer_config=qformer,
        text_config={
            **text,
            "model_type": "llama",
            "vocab_size": 32001,
            "max_position_embeddings": 2048,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
        },
        bridge_config={
            **bridge,
            "vocab_size": 30522,
            "mode": "multi_modal",
            "flow_estimator": "raft_large",
            "max_position_embeddings": 512,
        },
        num_query_tokens=queries,
        num_candidate_frames=candidates,
        num_keyframes=keyframes,
        frame_aggregation="concat",
    )


def machine_description(device) -> dict:
    import torch
    import transformers

    description = {
        "host_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        description.update(
            gpu=torch.cuda.get_device_name(device),
            gpu_memory_gib=round(properties.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
        )
    return description


class Clock:
    """Wall time and peak memory of a block; on CUDA it synchronises and reads the allocator's peak."""

    def __init__(self, device):
        self.device = device

    def synchronize(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def allocated_gib(self) -> float | None:
        import torch

        return torch.cuda.memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else None

    @contextlib.contextmanager
    def measure(self, record: dict) -> Iterator[None]:
        """Sets `record["seconds"]`, and on CUDA `record["peak_gib"]` (peak allocated during the block) and
        `record["peak_above_start_gib"]` (that peak minus what was allocated when the block began)."""
        import torch

        self.synchronize()
        start_memory = self.allocated_gib()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        yield
        self.synchronize()
        record["seconds"] = time.perf_counter() - start
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**30
            record["peak_gib"] = peak
            record["peak_above_start_gib"] = peak - start_memory


def repeated(clock: Clock, run: Callable[[], object], repeats: int) -> dict:
    """One untimed call, then `repeats` timed ones: median seconds, spread and peak memory (the largest)."""
    run()
    records = []
    for _ in range(repeats):
        record: dict = {}
        with clock.measure(record):
            run()
        records.append(record)
    seconds = [record["seconds"] for record in records]
    summary = {
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "repeats_s": seconds,
    }
    if "peak_gib" in records[0]:
        summary["peak_gib"] = max(record["peak_gib"] for record in records)
        summary["peak_above_start_gib"] = max(record["peak_above_start_gib"] for record in records)
    return summary


def build_model(config, device, dtype):
    """The model with random weights drawn directly on `device` in `dtype`, in eval mode."""
    import torch

    from videotgb import VideoTGBForConditionalGeneration

    torch.manual_seed(0)
    with torch.device(device):
        model = VideoTGBForConditionalGeneration._from_config(config, dtype=dtype)
    return model.eval()


def video_inputs(config, device, dtype, flow_steps: int, batch_size: int = 1) -> dict:
    """Random inputs of `batch_size` videos: candidates, precomputed flow, questions, prompt (+ answer labels)."""
    import torch

    generator = torch.Generator().manual_seed(1)
    image, flow_size = config.vision_config.image_size, config.bridge_config.flow_size

    def ids(vocab: int, length: int) -> torch.Tensor:
        return torch.randint(3, vocab, (batch_size, length), generator=generator)

    question = ids(config.bridge_config.vocab_size, QUESTION_LENGTH)
    text = ids(config.text_config.vocab_size, PROMPT_LENGTH + ANSWER_LENGTH)
    text[:, 0] = config.text_config.bos_token_id
    labels = text.clone()
    labels[:, :PROMPT_LENGTH] = -100
    inputs = {
        "pixel_values": torch.randn(batch_size, config.num_candidate_frames, 3, image, image, generator=generator),
        "flow": torch.randn(batch_size, flow_steps, 2, flow_size, flow_size, generator=generator).clamp(-1, 1),
        "flow_mask": torch.ones(batch_size, flow_steps, dtype=torch.long),
        "bridge_input_ids": question,
        "bridge_attention_mask": torch.ones_like(question),
        "qformer_input_ids": question,
        "qformer_attention_mask": torch.ones_like(question),
        "input_ids": text,
        "attention_mask": torch.ones_like(text),
        "labels": labels,
    }
    return {
        key: value.to(device, dtype) if value.is_floating_point() else value.to(device)
        for key, value in inputs.items()
    }


@contextlib.contextmanager
def keyframes_set_to(model, count: int) -> Iterator[None]:
    """`model.config.num_keyframes` set to `count` inside (the dense mode reads every candidate)."""
    kept = model.config.num_keyframes
    model.config.num_keyframes = count
    try:
        yield
    finally:
        model.config.num_keyframes = kept


def time_inference(model, config, clock: Clock, args, dtype) -> dict:
    import torch

    full = video_inputs(config, clock.device, dtype, args.flow_steps)
    prompt = {key: value[:, :PROMPT_LENGTH] for key, value in full.items() if key in ("input_ids", "attention_mask")}
    frames = {key: full[key] for key in ("pixel_values", "qformer_input_ids", "qformer_attention_mask")}
    flow = {key: full[key] for key in ("flow", "flow_mask", "bridge_input_ids", "bridge_attention_mask")}
    settings = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens, "do_sample": False}
    dense = torch.arange(config.num_candidate_frames, device=clock.device)[None]
    runs = {
        "bridge-4": (config.num_keyframes, {**prompt, **frames, **flow}),
        "uniform-4": (config.num_keyframes, {**prompt, **frames}),
        "dense-32": (config.num_candidate_frames, {**prompt, **frames, "keyframe_indices": dense}),
    }
    results = {}
    for mode, (keyframes, inputs) in runs.items():

        def answer(inputs=inputs) -> None:
            sequences = model.generate(**inputs, **settings)
            if sequences.shape[1] != args.new_tokens:
                raise RuntimeError(f"generated {sequences.shape[1]} tokens, not {args.new_tokens}")

        with keyframes_set_to(model, keyframes):
            results[mode] = {"frames_encoded": keyframes, **repeated(clock, answer, args.repeats)}
        print(f"inference {mode}: {results[mode]['median_s']:.3f} s", file=sys.stderr, flush=True)
    return results


def time_flow(clock: Clock, args) -> dict:
    import numpy as np
    import torch

    from videotgb.optical_flow import FlowConfig, compute_flow

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_optical_flow import make_frames

    size = 128 if args.tiny else 224
    pairs = 2 if args.tiny else args.flow_steps
    frames = make_frames(pairs + 1, size)
    first, second = np.ascontiguousarray(frames[:-1]), np.ascontiguousarray(frames[1:])
    estimators = {
        "raft_large": (FlowConfig("raft_large", size, raft_iterations=2 if args.tiny else None), clock.device),
        "dis (CPU)": (FlowConfig("dis", size), torch.device("cpu")),
    }
    results = {}
    for name, (flow_config, device) in estimators.items():

        def run(flow_config=flow_config, device=device) -> None:
            compute_flow(first, flow_config, next_frames=second, device=device, batch_size=16)

        results[name] = {
            "device": str(device),
            "pairs": pairs,
            "size": size,
            "iterations": flow_config.raft_iterations,
            **repeated(clock, run, args.repeats),
        }
        print(f"flow {name}: {results[name]['median_s']:.3f} s per video", file=sys.stderr, flush=True)
    return results


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def zero2_config(args, bf16: bool) -> dict:
    """The package's `zero2` DeepSpeed JSON with its "auto" values filled for one process."""
    from videotgb.training.deepspeed import resolve_deepspeed_config

    config = json.loads(Path(resolve_deepspeed_config("zero2")).read_text())
    config["bf16"]["enabled"] = bf16
    config["fp16"]["enabled"] = False
    config.update(
        train_micro_batch_size_per_gpu=args.train_batch_size,
        train_batch_size=args.train_batch_size,
        gradient_accumulation_steps=1,
        gradient_clipping=1.0,
    )
    config["zero_optimization"]["reduce_bucket_size"] = 5e8
    return config


def time_deepspeed(model, config, clock: Clock, args, dtype) -> dict:
    """ZeRO-2 steps of the `instruct` stage on one process."""
    import torch

    for key, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
    }.items():
        os.environ.setdefault(key, value)
    import deepspeed

    from videotgb.training.stages import apply_stage, get_stage

    deepspeed.init_distributed(dist_backend="nccl" if clock.device.type == "cuda" else "gloo")
    apply_stage(model, get_stage("instruct", seq2seq=False))
    model.train()
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, betas=(0.9, 0.999), eps=1e-8)
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=zero2_config(args, bf16=dtype == torch.bfloat16)
    )
    inputs = video_inputs(config, clock.device, dtype, args.flow_steps, args.train_batch_size)
    losses = []

    def step() -> None:
        loss = engine(**inputs).loss
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())

    result = {
        "train_batch_size": args.train_batch_size,
        "trainable_parameters": sum(parameter.numel() for parameter in trainable),
        "zero_stage": engine.zero_optimization_stage(),
        "world_size": engine.world_size,
        **repeated(clock, step, args.train_steps),
    }
    if not all(math.isfinite(loss) for loss in losses):
        raise RuntimeError(f"non-finite training losses: {losses}")
    result["losses"] = losses
    print(f"deepspeed zero2: {result['median_s']:.3f} s per step", file=sys.stderr, flush=True)
    return result


def markdown(results: dict) -> str:
    machine = results["machine"]
    where = machine.get("gpu", machine["device"])
    lines = [f"Device: {where}; {results['precision']}; {results['sizes']}", ""]

    def memory(entry: dict) -> str:
        if "peak_gib" not in entry:
            return "– | –"
        return f"{entry['peak_gib']:.2f} | {entry['peak_above_start_gib']:.2f}"

    def seconds(entry: dict) -> str:
        return f"{entry['median_s']:.3f} ({entry['min_s']:.3f}–{entry['max_s']:.3f})"

    lines += ["| inference (1 video) | s per answer | peak GiB | peak above weights GiB |", "|---|---|---|---|"]
    for mode, entry in results["inference"].items():
        lines.append(f"| {mode} | {seconds(entry)} | {memory(entry)} |")
    lines += ["", "| flow (1 video) | device | pairs | s per video |", "|---|---|---|---|"]
    for name, entry in results["flow"].items():
        lines.append(f"| {name} | {entry['device']} | {entry['pairs']} | {seconds(entry)} |")
    entry = results["deepspeed_zero2"]
    lines += [
        "",
        "| DeepSpeed ZeRO-2 (instruct stage) | batch | s per step | peak GiB | peak above start GiB |",
        "|---|---|---|---|---|",
        f"| {entry['trainable_parameters']:,} trained parameters | {entry['train_batch_size']} | {seconds(entry)} | "
        f"{memory(entry)} |",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU in fp32 (tests the script)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (after one untimed)")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens per answer")
    parser.add_argument("--flow-steps", type=int, default=64, help="flow steps per video")
    parser.add_argument("--train-batch-size", type=int, default=2, help="videos per ZeRO-2 step")
    parser.add_argument("--train-steps", type=int, default=3, help="timed ZeRO-2 steps (after one untimed)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "model", help="folder")
    args = parser.parse_args(argv)
    for flag in ("repeats", "new_tokens", "flow_steps", "train_batch_size", "train_steps"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.tiny:
        args.flow_steps, args.new_tokens, args.repeats, args.train_steps = min(args.flow_steps, 8), 4, 1, 1
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.tiny:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # read when deepspeed is imported
    import torch

    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit(
            "gpu_full_size.py: no CUDA device is available (torch.cuda.is_available() is False); the full-size run "
            "needs one GPU with about 40 GB of memory. Use --tiny to run the same code on the CPU with tiny sizes."
        )
    device = torch.device("cpu") if args.tiny else torch.device("cuda", torch.cuda.current_device())
    dtype = torch.float32 if args.tiny else torch.bfloat16
    clock = Clock(device)
    config = model_config(args.tiny, candidates=32, keyframes=4)
    start = time.perf_counter()
    model = build_model(config, device, dtype)
    results: dict = {
        "machine": machine_description(device),
        "command": " ".join(["python", "benchmarks/gpu_full_size.py", *(sys.argv[1:] if argv is None else argv)]),
        "precision": "fp32 (tiny, CPU)" if args.tiny else "bf16",
        "sizes": (
            f"{'tiny' if args.tiny else 'VideoTGB-7B'}: {sum(p.numel() for p in model.parameters()) / 1e9:.3f} B "
            f"parameters (bridge {sum(p.numel() for p in model.bridge.parameters()) / 1e6:.1f} M), "
            f"{config.num_candidate_frames} candidates, K = {config.num_keyframes}, {args.flow_steps} flow steps of "
            f"{config.bridge_config.flow_size} px, {args.new_tokens} new tokens per answer"
        ),
        "model_build_s": time.perf_counter() - start,
        "weights_gib": clock.allocated_gib(),
    }
    print(results["machine"], results["sizes"], file=sys.stderr, flush=True)
    with torch.inference_mode():
        if "flow" in args.sections:
            results["flow"] = time_flow(clock, args)
        if "inference" in args.sections:
            results["inference"] = time_inference(model, config, clock, args, dtype)
    if "deepspeed_zero2" in args.sections:
        results["deepspeed_zero2"] = time_deepspeed(model, config, clock, args, dtype)
    results["wall_s"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_full_size.json").write_text(json.dumps(results, indent=2) + "\n")
    if set(SECTIONS) <= set(results):
        table = markdown(results)
        (args.out / "gpu_full_size.md").write_text(table)
        print(table)
    return results


if __name__ == "__main__":
    main()
