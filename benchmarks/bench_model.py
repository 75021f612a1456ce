"""Model-side cost of VideoTGB against transformers' InstructBlipVideo at the same K and batch: training steps,
generation latency, and the bridge's attention (SDPA against eager).

Both models share the same vision, Q-Former and language-model sub-configs and weights. Inputs are random tensors
(no video decoding, no flow estimation: `benchmarks/bench_training.py` and `benchmarks/bench_video_io.py` time those):

- VideoTGB (`VideoTGBForConditionalGeneration`): `--candidates` candidate frames and `--flow-steps` flow steps per
  video; the bridge reads the flow and the question and picks K keyframes, which alone go through the ViT and the
  Q-Former (their K x query tokens concatenated, `frame_aggregation="concat"`);
- baseline (`transformers.InstructBlipVideoForConditionalGeneration`): exactly K frames per video, no flow, the same
  number of visual tokens (its video placeholders), the same prompt, labels and Q-Former instruction.

Configurations (`--configs`):

- ``tiny``: the synthetic benchmark's tiny model (`videotgb.synthetic.recipe.tiny_config`: width 64, 2 layers, 64 px
  frames in 8 px patches, 4 queries per frame, a 4-layer bridge of which 2 run, 32 px flow, its 249-word LM
  vocabulary); Python overhead is a large part of its steps;
- ``small``: width 256 (1024 MLP), 4 layers of ViT, Q-Former and LLaMA, 8 heads, 224 px frames in 14 px patches
  (257 tokens per frame), 32 queries per frame, a 32,000-token LM vocabulary (LLaMA's), BERT's 30,522-token bridge
  and Q-Former vocabulary, a bridge of 256 width with 4 of its 8 layers run (BERT's fusion split), 112 px flow in
  16 px patches.

Training stages (`--stages`), as `videotgb.training.stages` sets them; the baseline trains the same Q-Former, query
tokens and projection in both:

- ``instruct``: VideoTGB trains the Q-Former, query tokens and projection; the bridge is frozen (it runs forward
  only, to pick keyframes);
- ``self_refine``: VideoTGB also trains the bridge, with its span loss on (random) span targets next to the LM loss.

One training step is forward + backward + `torch.optim.AdamW` step. Generation: batch 1, greedy, exactly
`--new-tokens` new tokens (`min_new_tokens` = `max_new_tokens`), from the prompt alone. Bridge: the bridge module
alone on the same batch, forward in eval mode (inference) and forward + backward of its span loss (grounding stage),
with `attn_implementation` "eager" and "sdpa".

Each repeat times every variant of a comparison in turn (the order alternating between repeats), `--steps` calls
each after `--warmup` untimed ones; the tables give medians over repeats, the spread (min-max over repeats) and the
ratios of medians. Results are written to ``--out`` as ``bench_model.json`` and ``bench_model.md``.

Usage::

    python benchmarks/bench_model.py --quick                      # checks that it runs (< 1 min)
    python benchmarks/bench_model.py                              # both configs (a few minutes on 2 CPU cores)
    python benchmarks/bench_model.py --configs small --repeats 7 --steps 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench_training.py: idle torch threads sleep on shared cores

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("tiny", "small")
STAGES = ("instruct", "self_refine")
# tokens of the prompt + answer, of the answer (labelled), of the bridge's and the Q-Former's question
TEXT_LENGTH, ANSWER_LENGTH, QUESTION_LENGTH = 32, 8, 12
FROZEN_EVAL = "VideoTGB, frozen bridge in eval mode"


def machine_description() -> dict:
    import transformers

    cpu_model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu_model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "load_average_at_start": os.getloadavg(),
    }


def videotgb_config(name: str, args: argparse.Namespace):
    """The `VideoTGBConfig` of configuration `name` with the run's candidates and K."""
    from videotgb import VideoTGBConfig
    from videotgb.synthetic.recipe import tiny_config

    if name == "tiny":
        # the synthetic recipe's tokenizers: 249 LM tokens (bos 1, eos 2, pad 3), 129 BERT tokens
        config = tiny_config(249, 129, 1, 2, 3)
    else:
        width = {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 8}
        config = VideoTGBConfig(
            vision_config={**width, "image_size": 224, "patch_size": 14, "initializer_range": 0.02},
            qformer_config={**width, "vocab_size": 30522, "cross_attention_frequency": 1},
            text_config={
                **width,
                "model_type": "llama",
                "num_key_value_heads": 8,
                "vocab_size": 32000,
                "max_position_embeddings": 1024,
                "bos_token_id": 1,
                "eos_token_id": 2,
                "pad_token_id": 0,
            },
            bridge_config={
                **width,
                "num_hidden_layers": 8,
                "fusion_layer": 4,
                "vocab_size": 30522,
                "flow_size": 112,
                "flow_patch_size": 16,
                "flow_estimator": "dis",
            },
            num_query_tokens=32,
            frame_aggregation="concat",
        )
    config.num_candidate_frames = args.candidates
    config.num_keyframes = args.keyframes
    return config


def build_models(config, stage_name: str, seed: int) -> tuple[torch.nn.Module, torch.nn.Module, int]:
    """VideoTGB and InstructBlipVideo with the same shared weights, trainable as `stage_name` sets (the baseline:
    the stage's modules it has), in training mode; and the baseline's video placeholder id."""
    from bench_training import matching_baseline

    from videotgb import VideoTGBForConditionalGeneration
    from videotgb.training.stages import apply_stage, get_stage

    torch.manual_seed(seed)
    videotgb = VideoTGBForConditionalGeneration(config)
    stage = get_stage(stage_name, seq2seq=False)
    apply_stage(videotgb, stage)
    video_token_id = config.text_config.vocab_size - 1  # the inputs never draw it
    baseline = matching_baseline(videotgb, stage, video_token_id)
    return videotgb.train(), baseline.train(), video_token_id


def make_inputs(config, batch_size: int, flow_steps: int, video_token_id: int, seed: int) -> dict[str, dict]:
    """The two models' training inputs for the same batch: VideoTGB's candidates, flow and questions, and the
    baseline's K evenly spaced frames (of the same candidates) behind its video placeholders."""
    generator = torch.Generator().manual_seed(seed)
    image, flow_size = config.vision_config.image_size, config.bridge_config.flow_size
    text_vocab, question_vocab = config.text_config.vocab_size, config.qformer_config.vocab_size

    def ids(vocab: int, length: int) -> torch.Tensor:
        return torch.randint(4, vocab - 1, (batch_size, length), generator=generator)

    input_ids = ids(text_vocab, TEXT_LENGTH)
    input_ids[:, 0] = config.text_config.bos_token_id
    labels = input_ids.clone()
    labels[:, : TEXT_LENGTH - ANSWER_LENGTH] = -100
    question = ids(question_vocab, QUESTION_LENGTH)
    pixel_values = torch.randn(batch_size, config.num_candidate_frames, 3, image, image, generator=generator)
    common = {"qformer_input_ids": question, "qformer_attention_mask": torch.ones_like(question)}
    videotgb = {
        **common,
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": labels,
        "pixel_values": pixel_values,
        "flow": torch.randn(batch_size, flow_steps, 2, flow_size, flow_size, generator=generator),
        "flow_mask": torch.ones(batch_size, flow_steps, dtype=torch.long),
        "bridge_input_ids": question,
        "bridge_attention_mask": torch.ones_like(question),
    }
    step = config.num_candidate_frames // config.num_keyframes
    prefix = (batch_size, config.num_visual_tokens)
    baseline = {
        **common,
        "input_ids": torch.cat([torch.full(prefix, video_token_id), input_ids], dim=1),
        "attention_mask": torch.ones(batch_size, prefix[1] + TEXT_LENGTH, dtype=torch.long),
        "labels": torch.cat([torch.full(prefix, -100), labels], dim=1),
        "pixel_values": pixel_values[:, step // 2 :: step][:, : config.num_keyframes].contiguous(),
    }
    return {"VideoTGB": videotgb, "baseline": baseline}


def compare(
    calls: dict[str, Callable[[], object]], args: argparse.Namespace, label: str
) -> dict[str, dict[str, float | list[float]]]:
    """Seconds per call of each of `calls`: `args.repeats` repeats of `args.steps` calls after `args.warmup` untimed
    ones, the order alternating between repeats. Returns per name the median, min, max and every repeat's value."""
    names = list(calls)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        for _ in range(args.warmup):
            calls[name]()
    for repeat in range(args.repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            torch.manual_seed(args.seed + repeat)  # the bridge's training-mode span sampling
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                calls[name]()
            seconds[name].append((time.perf_counter() - start) / args.steps)
            cpu_seconds[name].append((time.process_time() - cpu_start) / args.steps)
    summary = {
        name: {
            "median_s": statistics.median(values),
            "min_s": min(values),
            "max_s": max(values),
            "repeats_s": values,
            # CPU time of this process (all its threads): less sensitive than wall time to other processes sharing
            # the cores, but it counts idle-spinning threads
            "cpu_median_s": statistics.median(cpu_seconds[name]),
            "cpu_repeats_s": cpu_seconds[name],
        }
        for name, values in seconds.items()
    }
    text = ", ".join(
        f"{name} {summary[name]['median_s'] * 1e3:.1f} ms (CPU {summary[name]['cpu_median_s'] * 1e3:.1f} ms)"
        for name in names
    )
    print(f"{label}: {text}", file=sys.stderr, flush=True)
    return summary


def training_step(model: torch.nn.Module, inputs: dict) -> Callable[[], float]:
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=5e-5, betas=(0.9, 0.98), eps=1e-8
    )

    def step() -> float:
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def bridge_only(videotgb, inputs: dict) -> dict[str, Callable[[], object]]:
    """The frozen bridge's forward (no graph), as in the `instruct` stage: what VideoTGB adds before its ViT."""
    model_inputs = (inputs["flow"], inputs["flow_mask"], inputs["bridge_input_ids"], inputs["bridge_attention_mask"])

    def forward() -> None:
        with torch.no_grad():
            videotgb.select_keyframes(
                torch.full((inputs["flow"].shape[0],), videotgb.config.num_candidate_frames), *model_inputs
            )

    return {"bridge + keyframe selection": forward}


def distinct_keyframes(select: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """`keyframes.select_keyframes` whose repeated picks are replaced by the unpicked candidates nearest to them.

    The bridge may pick a frame twice (`select_keyframes` allows repeats), and VideoTGB then encodes it once; with
    random weights that happens often (2.5 distinct frames of 4 in trial runs of the small config), which would
    credit VideoTGB with ViT and Q-Former work it skipped by chance. With this, VideoTGB encodes K frames, as the
    baseline does; the bridge and the selection still run in full.
    """

    def select_distinct(*args, num_candidates: int, **kwargs) -> torch.Tensor:
        chosen = select(*args, num_candidates=num_candidates, **kwargs)
        rows = []
        for row in chosen.tolist():
            picked: list[int] = []
            for index in row:
                free = [other for other in range(num_candidates) if other not in picked]
                picked.append(min(free, key=lambda other: (abs(other - index), other)))
            rows.append(sorted(picked))
        return torch.tensor(rows, dtype=chosen.dtype, device=chosen.device)

    return select_distinct


def time_training(config, name: str, stage: str, args: argparse.Namespace) -> dict:
    videotgb, baseline, video_token_id = build_models(config, stage, args.seed)
    inputs = make_inputs(config, args.batch_size, args.flow_steps, video_token_id, args.seed)
    if stage == "self_refine":
        generator = torch.Generator().manual_seed(args.seed)
        start = torch.rand(args.batch_size, generator=generator) * 0.5
        inputs["VideoTGB"]["span_targets"] = torch.stack([start, start + 0.3], dim=1)
    from videotgb.keyframes import select_keyframes  # the bridge's own choice, repeats allowed

    with torch.no_grad():
        bridge_output = videotgb.run_bridge(
            *(inputs["VideoTGB"][key] for key in ("flow", "flow_mask", "bridge_input_ids", "bridge_attention_mask")),
            args.batch_size,
        )
        keyframes = select_keyframes(
            bridge_output.start_logits,
            bridge_output.end_logits,
            bridge_output.flow_lengths,
            num_candidates=config.num_candidate_frames,
            num_keyframes=config.num_keyframes,
            num_spans=config.num_spans,
            strategy=config.train_selection,
            end_inclusive=config.span_end_inclusive,
        )
    distinct = sum(len(set(row)) for row in keyframes.tolist()) / args.batch_size
    calls = {
        name: training_step(model, inputs[name]) for name, model in (("VideoTGB", videotgb), ("baseline", baseline))
    }
    trainable = {
        name: sum(p.numel() for p in model.parameters() if p.requires_grad)
        for name, model in (("VideoTGB", videotgb), ("baseline", baseline))
    }
    if stage == "instruct":
        calls.update(bridge_only(videotgb, inputs["VideoTGB"]))
        # the same model with its frozen bridge in eval mode (no dropout; keyframes still sampled, as the model is in
        # training mode): what the bridge's training-mode dropout costs in this stage
        frozen_eval, _, _ = build_models(config, stage, args.seed)
        frozen_eval.bridge.eval()
        calls[FROZEN_EVAL] = training_step(frozen_eval, inputs["VideoTGB"])
    timings = compare(calls, args, f"{name} {stage} training step")
    return {
        "stage": stage,
        "trainable_parameters": trainable,
        "bridge_distinct_keyframes_per_video": distinct,
        "repeated_keyframes_moved_to_distinct": not args.allow_repeated_keyframes,
        "timings": timings,
        "ratio_videotgb_over_baseline": timings["VideoTGB"]["median_s"] / timings["baseline"]["median_s"],
        "cpu_ratio_videotgb_over_baseline": timings["VideoTGB"]["cpu_median_s"] / timings["baseline"]["cpu_median_s"],
    }


def time_generation(config, name: str, args: argparse.Namespace) -> dict:
    videotgb, baseline, video_token_id = build_models(config, "instruct", args.seed)
    videotgb.eval(), baseline.eval()
    inputs = make_inputs(config, 1, args.flow_steps, video_token_id, args.seed)
    prompt = TEXT_LENGTH - ANSWER_LENGTH
    settings = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens, "do_sample": False}

    def generate(model: torch.nn.Module, model_inputs: dict, visual_tokens: int) -> Callable[[], object]:
        kept = {key: value for key, value in model_inputs.items() if key not in ("labels", "span_targets")}
        kept["input_ids"] = kept["input_ids"][:, : visual_tokens + prompt]
        kept["attention_mask"] = kept["attention_mask"][:, : visual_tokens + prompt]

        def call() -> None:
            output = model.generate(**kept, **settings)
            sequences = output if isinstance(output, torch.Tensor) else output.sequences
            new = sequences.shape[1] - (0 if model is videotgb else kept["input_ids"].shape[1])
            if new != args.new_tokens:
                raise RuntimeError(f"{type(model).__name__} generated {new} tokens, not {args.new_tokens}")

        return call

    calls = {
        "VideoTGB": generate(videotgb, inputs["VideoTGB"], 0),
        "baseline": generate(baseline, inputs["baseline"], config.num_visual_tokens),
    }
    timings = compare(calls, args, f"{name} generation")
    return {
        "new_tokens": args.new_tokens,
        "timings": timings,
        "ratio_videotgb_over_baseline": timings["VideoTGB"]["median_s"] / timings["baseline"]["median_s"],
    }


def time_bridge_attention(config, name: str, args: argparse.Namespace) -> dict:
    """The bridge alone, eager against SDPA attention: inference forward and grounding-stage forward + backward."""
    from videotgb import VideoTGBBridgeModel
    from videotgb.modeling_videotgb import span_cross_entropy

    inputs = make_inputs(config, args.batch_size, args.flow_steps, 1, args.seed)["VideoTGB"]
    bridge_inputs = {
        "flow": inputs["flow"],
        "input_ids": inputs["bridge_input_ids"],
        "flow_mask": inputs["flow_mask"],
        "attention_mask": inputs["bridge_attention_mask"],
    }
    targets = torch.arange(args.batch_size) % args.flow_steps
    bridges = {}
    for implementation in ("eager", "sdpa"):
        torch.manual_seed(args.seed)
        bridges[implementation] = VideoTGBBridgeModel._from_config(
            config.bridge_config, attn_implementation=implementation
        )
        if bridges[implementation].config._attn_implementation != implementation:
            raise RuntimeError(f"the bridge did not take attn_implementation={implementation!r}")

    def inference(bridge) -> Callable[[], object]:
        def call() -> None:
            with torch.no_grad():
                bridge.eval()(**bridge_inputs)

        return call

    def grounding(bridge) -> Callable[[], object]:
        def call() -> None:
            output = bridge.train()(**bridge_inputs)
            span_cross_entropy(output.start_logits, output.end_logits, targets, targets + 1).backward()
            bridge.zero_grad(set_to_none=True)

        return call

    result = {}
    for mode, make in (("inference forward", inference), ("grounding forward + backward", grounding)):
        timings = compare({name: make(bridge) for name, bridge in bridges.items()}, args, f"{name} bridge {mode}")
        result[mode] = {
            "timings": timings,
            "ratio_sdpa_over_eager": timings["sdpa"]["median_s"] / timings["eager"]["median_s"],
        }
    with torch.no_grad():
        eager, sdpa = (bridge.eval()(**bridge_inputs).start_logits for bridge in bridges.values())
    result["max_abs_difference_start_logits"] = float((eager - sdpa).abs().max())
    return result


def markdown(results: dict) -> str:
    def cell(timing: dict) -> str:
        return f"{timing['median_s'] * 1e3:.1f} ({timing['min_s'] * 1e3:.1f}–{timing['max_s'] * 1e3:.1f})"

    def cpu_ratio(numerator: dict, denominator: dict) -> str:
        return f"{numerator['cpu_median_s'] / denominator['cpu_median_s']:.3f}"

    def frozen_eval_ratio(timings: dict) -> str:
        if FROZEN_EVAL not in timings:
            return "–"
        wall = timings[FROZEN_EVAL]["median_s"] / timings["baseline"]["median_s"]
        return f"{wall:.3f}; {cpu_ratio(timings[FROZEN_EVAL], timings['baseline'])}"

    lines = [
        "Milliseconds per call: median over repeats (min–max over repeats).",
        "",
        "| config | stage | VideoTGB step | baseline step | VideoTGB / baseline (wall; CPU time) | bridge + selection "
        "alone | VideoTGB, frozen bridge in eval mode / baseline (wall; CPU) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in results["configs"].items():
        for training in run["training"]:
            timings = training["timings"]
            alone = timings.get("bridge + keyframe selection")
            lines.append(
                f"| {name} | {training['stage']} | {cell(timings['VideoTGB'])} | {cell(timings['baseline'])} | "
                f"{training['ratio_videotgb_over_baseline']:.3f}; {cpu_ratio(timings['VideoTGB'], timings['baseline'])} | "
                f"{cell(alone) if alone else '–'} | {frozen_eval_ratio(timings)} |"
            )
    lines += [
        "",
        "| config | generation (N new tokens) | VideoTGB | baseline | VideoTGB / baseline (wall; CPU) |",
        "|---|---|---|---|---|",
    ]
    for name, run in results["configs"].items():
        generation = run.get("generation")
        if generation:
            timings = generation["timings"]
            lines.append(
                f"| {name} | {generation['new_tokens']} | {cell(timings['VideoTGB'])} | {cell(timings['baseline'])} | "
                f"{generation['ratio_videotgb_over_baseline']:.3f}; {cpu_ratio(timings['VideoTGB'], timings['baseline'])} |"
            )
    lines += ["", "| config | bridge alone | eager | sdpa | sdpa / eager (wall; CPU) |", "|---|---|---|---|---|"]
    for name, run in results["configs"].items():
        for mode, entry in run.get("bridge_attention", {}).items():
            if isinstance(entry, dict):
                timings = entry["timings"]
                lines.append(
                    f"| {name} | {mode} | {cell(timings['eager'])} | {cell(timings['sdpa'])} | "
                    f"{entry['ratio_sdpa_over_eager']:.3f}; {cpu_ratio(timings['sdpa'], timings['eager'])} |"
                )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["training", "generation", "bridge"],
        choices=("training", "generation", "bridge"),
    )
    parser.add_argument("--batch-size", type=int, default=4, help="videos per training step (generation: 1)")
    parser.add_argument("--candidates", type=int, default=32, help="VideoTGB's candidate frames per video")
    parser.add_argument("--flow-steps", type=int, default=64, help="flow steps per video")
    parser.add_argument("--keyframes", type=int, default=4, help="K: VideoTGB's keyframes = the baseline's frames")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens generated per answer")
    parser.add_argument("--steps", type=int, default=5, help="timed calls per repeat")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before the first repeat")
    parser.add_argument("--repeats", type=int, default=5, help="repeats (medians are reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--allow-repeated-keyframes",
        action="store_true",
        help="let VideoTGB encode a frame the bridge picks twice once (default: repeats move to the nearest unpicked "
        "candidates, so that VideoTGB encodes K frames as the baseline does)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "model", help="folder")
    parser.add_argument("--quick", action="store_true", help="tiny config, 1 step, 1 repeat: checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.configs, args.steps, args.warmup, args.repeats = ["tiny"], 1, 1, 1
    for flag in ("batch_size", "candidates", "flow_steps", "keyframes", "new_tokens", "steps", "repeats"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.keyframes > args.candidates:
        parser.error(f"--keyframes ({args.keyframes}) must not exceed --candidates ({args.candidates})")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = {
        "machine": machine_description(),
        "command": " ".join(["python", "benchmarks/bench_model.py", *(sys.argv[1:] if argv is None else argv)]),
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "configs": {},
    }
    print(results["machine"], file=sys.stderr)
    if not args.allow_repeated_keyframes:
        from videotgb import modeling_videotgb

        modeling_videotgb.select_keyframes = distinct_keyframes(modeling_videotgb.select_keyframes)
    start = time.perf_counter()
    for name in args.configs:
        config = videotgb_config(name, args)
        run: dict = {"config": {"visual_tokens": config.num_visual_tokens, **_sizes(config)}}
        if "training" in args.parts:
            run["training"] = [time_training(config, name, stage, args) for stage in args.stages]
        if "generation" in args.parts:
            run["generation"] = time_generation(config, name, args)
        if "bridge" in args.parts:
            run["bridge_attention"] = time_bridge_attention(config, name, args)
        results["configs"][name] = run
    results["wall_s"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_model.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.out / "bench_model.md").write_text(table)
    print(table)
    return results


def _sizes(config) -> dict:
    from videotgb import VideoTGBForConditionalGeneration

    with torch.device("meta"):
        model = VideoTGBForConditionalGeneration(config)
    return {
        part: sum(p.numel() for p in getattr(model, part).parameters())
        for part in ("vision_model", "qformer", "language_model", "bridge")
    }


if __name__ == "__main__":
    main()
