"""`videotgb app`: a Gradio chat page that answers questions about a video and shows which moments the model read.

Upload a video (or pick one of the synthetic examples generated at start-up), ask questions, and read the answer as it
is generated, token by token. Beside it: the keyframes the Temporal Grounding Bridge chose (with their times), the
bridge's span probability over the whole video, and the optical flow the bridge read at each chosen moment. The video
is decoded and its flow computed once when it is opened; every question about it reuses them. Each question is
answered on its own (the model was trained on single questions: earlier turns are shown, not fed back).

`videotgb export-space` writes the same app as a Hugging Face Space folder (``app.py``, ``requirements.txt`` and the
Space's ``README.md``).

Gradio is imported only when the page is built, so the rest of the command line does not need it. Not remote code:
the model, processor and video files never import this module.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import logging

from .cli import DTYPES

logger = logging.get_logger(__name__)

GRADIO_VERSION = "6.31.0"
"""The Gradio version the app is tested with (requirements-app.txt) and a Space export asks for."""

DEFAULT_MAX_FILE_MB = 200.0
"""Largest upload, in MB, unless `--max-file-mb` says otherwise."""

DISPLAY_SIDE = 192
"""Keyframes and flow pictures smaller than this (the tiny model's 64 x 64 frames) are enlarged to it for display."""

MAX_BEAMS = 8
MAX_NEW_TOKENS = 256


@dataclass
class OpenVideo:
    """What a conversation keeps about its video (in `gr.State`): the decoded clip and its flow, computed once."""

    path: str
    clip: Any  # VideoClip
    flow: torch.Tensor  # (L, 2, S, S)


@dataclass
class Settings:
    """Generation settings from the page's controls."""

    keyframes: int
    beams: int = 1
    sample: bool = False
    temperature: float = 1.0
    max_new_tokens: int = 32


@dataclass
class Turn:
    """One update of the page while a question is answered: the conversation, the keyframes and flow pictures
    (each with its caption) and the span plot (None until the answer is complete)."""

    history: list[dict[str, str]]
    keyframes: list[tuple[np.ndarray, str]]
    flows: list[tuple[np.ndarray, str]]
    figure: Any = None


def _enlarge(image: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """`(H, W, 3)` uint8 enlarged by an integer factor (nearest neighbour) until its shorter side reaches `side`."""
    factor = max(1, -(-side // min(image.shape[:2])))
    return np.ascontiguousarray(image.repeat(factor, 0).repeat(factor, 1))


def flow_pictures(flow: torch.Tensor, flow_timestamps, keyframe_timestamps) -> list[tuple[np.ndarray, str]]:
    """The colour picture (torchvision's `flow_to_image`) of the flow step nearest each keyframe, with a caption.

    Args:
        flow: `(L, 2, S, S)` the bridge's flow of the video. flow_timestamps: `(L,)` seconds of each step.
        keyframe_timestamps: seconds of each keyframe.
    Returns:
        per keyframe, `(S', S', 3)` uint8 and ``"flow T s"`` (the step's time).
    """
    from torchvision.utils import flow_to_image

    times = np.asarray(flow_timestamps, dtype=np.float64)[: len(flow)]
    pictures = []
    for seconds in keyframe_timestamps:
        step = int(np.nanargmin(np.abs(times - seconds))) if np.isfinite(times).any() else 0
        image = flow_to_image(flow[step].float()).permute(1, 2, 0).numpy()
        pictures.append((_enlarge(image), f"flow {times[step]:.2f} s"))
    return pictures


class VideoChat:
    """The app's handlers, independent of the page: open a video once, then answer questions about it (streamed).

    Args:
        model, processor: a VideoTGB model (eval mode, on its device) and its processor.
        recipe: the model's ``recipe.json`` (models of `videotgb synthetic train` only answer questions about motion)
            or None.
        max_file_mb: uploads larger than this are refused.
    """

    def __init__(
        self, model, processor, recipe: dict[str, Any] | None = None, max_file_mb: float = DEFAULT_MAX_FILE_MB
    ):
        self.model = model
        self.processor = processor
        self.recipe = recipe
        self.max_file_mb = max_file_mb
        self._lock = threading.Lock()  # one generation at a time: K is set on the model's config for the call

    # ---- the video ----------------------------------------------------------------------------------------------

    def open_video(self, path: str | os.PathLike | None) -> tuple[OpenVideo | None, str]:
        """Decode `path` and compute its flow: the conversation's state and a status line for the page (an error
        naming the file and what is wrong, when it cannot be used)."""
        if path is None:
            return None, "Upload a video or pick an example."
        name = Path(path).name
        try:
            size_mb = os.path.getsize(path) / 1e6
            if size_mb > self.max_file_mb:
                raise ValueError(f"{size_mb:.1f} MB, more than this app's limit of {self.max_file_mb:g} MB")
            clip = self.processor.load_video(os.fspath(path))
            flow = self.processor.video_flow(clip)
        except (OSError, ValueError) as error:
            logger.warning("video %s refused: %s", path, error)
            reason = str(error).replace(f"{os.fspath(path)}: ", "")  # the page names the file once, without its folder
            return None, f"**Error:** `{name}` cannot be used: {reason}"
        metadata = clip.metadata
        duration = f"{metadata.duration_s:.1f} s, " if metadata is not None and metadata.duration_s else ""
        status = (
            f"Opened `{name}` ({duration}{len(clip.candidate_indices)} candidate frames, {len(flow)} flow steps). "
            "Ask a question."
        )
        return OpenVideo(os.fspath(path), clip, flow), status

    # ---- a question ---------------------------------------------------------------------------------------------

    def _refusal(self, question: str, video: OpenVideo | None) -> str | None:
        from .demo import check_question

        if video is None:
            return "Open a video first (upload one or pick an example)."
        try:
            check_question(question, self.recipe)
        except ValueError as error:
            return str(error).replace("--question", "The question", 1)
        return None

    def _settings_error(self, settings: Settings) -> str | None:
        candidates = self.processor.num_candidate_frames
        if not 1 <= settings.keyframes <= candidates:
            return f"K = {settings.keyframes}: choose 1 to {candidates} keyframes (the candidate frames)"
        if not 1 <= settings.beams <= MAX_BEAMS:
            return f"beams = {settings.beams}: choose 1 to {MAX_BEAMS}"
        if settings.sample and not 0 < settings.temperature <= 5:
            return f"temperature = {settings.temperature}: choose a value in (0, 5]"
        if not 1 <= settings.max_new_tokens <= MAX_NEW_TOKENS:
            return f"max new tokens = {settings.max_new_tokens}: choose 1 to {MAX_NEW_TOKENS}"
        return None

    def ask(
        self, question: str, history: list[dict[str, str]] | None, video: OpenVideo | None, settings: Settings
    ) -> Iterator[Turn]:
        """Answer `question` about the conversation's `video`: yields the page's state after the keyframes are
        chosen, after each streamed piece of the answer, and once complete with the span plot. A question that
        cannot be asked gets the reason as the assistant's message."""
        question = (question or "").strip()
        history = [*(history or []), {"role": "user", "content": question or "(empty question)"}]
        refusal = self._refusal(question, video) or self._settings_error(settings)
        if refusal is not None:
            yield Turn([*history, {"role": "assistant", "content": f"⚠️ {refusal}"}], [], [])
            return
        from .demo import DemoResult, demo_figure, span_probability

        model, processor, clip = self.model, self.processor, video.clip
        batch = processor([question], videos=[clip], flows=[video.flow]).to(model.device)
        batch = batch | {key: value.to(model.dtype) for key, value in batch.items() if value.is_floating_point()}
        with self._lock:
            keyframes, bridge = self._choose(batch, settings.keyframes)
            steps = int(bridge.flow_lengths[0])
            probability = span_probability(bridge.start_logits[0, :steps], bridge.end_logits[0, :steps])
            indices = keyframes[0].tolist()
            stamps = [float(clip.candidate_timestamps[index]) for index in indices]
            pictures = [
                (_enlarge(clip.candidate_frames[index]), f"#{number + 1}: {seconds:.2f} s")
                for number, (index, seconds) in enumerate(zip(indices, stamps, strict=True))
            ]
            flows = flow_pictures(video.flow, clip.flow_timestamps, stamps)
            answer = ""
            yield Turn([*history, {"role": "assistant", "content": "…"}], pictures, flows)
            try:
                for answer in self._generate(batch, keyframes, settings):
                    yield Turn([*history, {"role": "assistant", "content": answer}], pictures, flows)
            except (RuntimeError, ValueError) as error:
                logger.warning("generation failed: %s", error)
                yield Turn(
                    [*history, {"role": "assistant", "content": f"⚠️ generation failed: {error}"}], pictures, flows
                )
                return
        metadata = clip.metadata
        duration = (
            metadata.duration_s if metadata is not None and metadata.duration_s else float(clip.flow_timestamps[-1])
        )
        result = DemoResult(
            video=Path(video.path).name,
            question=question,
            answer=answer,
            keyframe_indices=indices,
            keyframe_timestamps=stamps,
            keyframe_frames=np.stack([clip.candidate_frames[index] for index in indices]),
            candidate_timestamps=[float(t) for t in clip.candidate_timestamps],
            flow_timestamps=[float(t) for t in clip.flow_timestamps[:steps]],
            span_probability=probability.tolist(),
            duration_s=float(duration),
        )
        yield Turn([*history, {"role": "assistant", "content": answer}], pictures, flows, demo_figure(result))

    def _choose(self, batch, keyframes: int):
        """The bridge's `(1, K)` keyframes and its output, with K = `keyframes` (set on the config; under the lock)."""
        self.model.config.num_keyframes = keyframes
        with torch.inference_mode():
            return self.model.select_keyframes(
                batch["frame_mask"].sum(-1),
                batch["flow"],
                batch["flow_mask"],
                batch["bridge_input_ids"],
                batch["bridge_attention_mask"],
            )

    def _generate(self, batch, keyframes: torch.Tensor, settings: Settings) -> Iterator[str]:
        """The answer so far, growing as tokens arrive (`TextIteratorStreamer`, generation in a thread); beam search
        cannot stream, so with beams > 1 only the whole answer is given."""
        from transformers import TextIteratorStreamer

        kwargs = dict(batch, keyframe_indices=keyframes, max_new_tokens=settings.max_new_tokens)
        kwargs |= {"do_sample": True, "temperature": settings.temperature} if settings.sample else {"do_sample": False}
        if settings.beams > 1:
            kwargs["num_beams"] = settings.beams
            with torch.inference_mode():
                sequences = self.model.generate(**kwargs)
            yield self.processor.batch_decode(sequences, skip_special_tokens=True)[0].strip()
            return
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**kwargs, streamer=streamer)
            except BaseException as error:  # noqa: BLE001 - handed to the page's thread below
                failure.append(error)
                streamer.end()

        thread = threading.Thread(target=run, name="videotgb-generate", daemon=True)
        thread.start()
        text = shown = ""
        for piece in streamer:
            text += piece
            if text.strip() != shown:
                shown = text.strip()
                yield shown
        thread.join()
        if failure:
            raise failure[0]
        if not shown:
            yield ""


# ---- the page ---------------------------------------------------------------------------------------------------


def synthetic_examples(recipe: dict[str, Any], folder: str | os.PathLike, count: int = 3) -> list[tuple[str, str]]:
    """Encode `count` synthetic test videos of `recipe` (:func:`videotgb.demo.demo_scene`) into `folder`:
    `(path, question)` pairs."""
    from .demo import demo_scene
    from .synthetic import encode_scene

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    for number in range(count):
        scene = demo_scene(recipe, number)
        path = folder / f"synthetic_test_{number}.mp4"
        path.write_bytes(encode_scene(scene))
        examples.append((str(path), scene.question))
    return examples


def build_app(chat: VideoChat, examples: list[tuple[str, str]] = (), title: str = "VideoTGB"):
    """The Gradio `Blocks` page over `chat`. Elements carry ``elem_id``s (``video``, ``video-status``, ``chat``,
    ``question``, ``ask``, ``examples``, ``keyframes``, ``flows``, ``span-plot``, and the controls) for tests and styling."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    config = chat.model.config
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {title}\nAsk about a video. The Temporal Grounding Bridge reads optical flow over "
            f"{config.num_candidate_frames} candidate frames and your question, and picks the keyframes the answer is "
            "read from: they are shown below with their times, the bridge's span probability over the whole video, "
            "and the flow at each chosen moment."
        )
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                video = gr.Video(label="video", sources=["upload"], include_audio=True, elem_id="video")
                status = gr.Markdown("Upload a video or pick an example.", elem_id="video-status")
                with gr.Accordion("generation settings", open=False):
                    keyframes = gr.Slider(
                        1, config.num_candidate_frames, value=config.num_keyframes, step=1,
                        label="K: keyframes the model reads", elem_id="keyframes-k",
                    )  # fmt: skip
                    beams = gr.Slider(
                        1, MAX_BEAMS, value=1, step=1, label="beams (no streaming above 1)", elem_id="beams"
                    )
                    sample = gr.Checkbox(False, label="sampling", elem_id="sample")
                    temperature = gr.Slider(
                        0.1, 2.0, value=1.0, step=0.05, label="temperature (sampling)", elem_id="temperature"
                    )
                    max_new_tokens = gr.Slider(
                        1, MAX_NEW_TOKENS, value=32, step=1, label="max new tokens", elem_id="max-new-tokens"
                    )
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="conversation", elem_id="chat", height=320)
                with gr.Row():
                    question = gr.Textbox(
                        placeholder="e.g. What colour is the shape that moves up?", show_label=False, scale=4,
                        elem_id="question",
                    )  # fmt: skip
                    ask = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
                if examples:
                    gr.Examples(
                        [[path, text] for path, text in examples],
                        inputs=[video, question],
                        label="synthetic examples: a video and a question the shipped model can answer",
                        elem_id="examples",
                    )
        with gr.Row():
            gallery = gr.Gallery(label="keyframes (time in the video)", columns=4, height=230, elem_id="keyframes")
            flows = gr.Gallery(label="optical flow at each keyframe", columns=4, height=230, elem_id="flows")
        plot = gr.Plot(label="the bridge's span probability over the whole video", format="png", elem_id="span-plot")

        def on_video(path):
            opened, message = chat.open_video(path)
            return opened, message, [], [], [], None

        def on_ask(text, history, opened, k, n_beams, do_sample, temp, new_tokens):
            settings = Settings(int(k), int(n_beams), bool(do_sample), float(temp), int(new_tokens))
            shown = None
            for turn in chat.ask(text, history, opened, settings):
                # The pictures are sent once per answer: sending them again with every token would rewrite their
                # files while the browser reads them.
                first, shown = shown is None, turn.keyframes
                pictures = (turn.keyframes, turn.flows) if first else (gr.skip(), gr.skip())
                figure = turn.figure if turn.figure is not None or first else gr.skip()
                yield turn.history, *pictures, figure, ""

        video.change(on_video, [video], [state, status, chatbot, gallery, flows, plot])
        inputs = [question, chatbot, state, keyframes, beams, sample, temperature, max_new_tokens]
        outputs = [chatbot, gallery, flows, plot, question]
        ask.click(on_ask, inputs, outputs)
        question.submit(on_ask, inputs, outputs)
    return demo


# ---- command line -----------------------------------------------------------------------------------------------


def add_app_parsers(commands) -> None:
    """Add `videotgb app` and `videotgb export-space` to the `videotgb` sub-command parsers."""
    parser = commands.add_parser(
        "app",
        help="a chat page in the browser (Gradio) that shows which moments the model looked at",
        description="Serve a Gradio page: upload a video (or pick a synthetic example), ask questions, read the "
        "answer as it is generated, and see the chosen keyframes with their times, the bridge's span probability "
        "over the whole video and the flow at each keyframe. Needs gradio (pip install --no-deps -r "
        "requirements-app.txt). See docs/app.md.",
    )
    parser.add_argument("--model", default=None, help="checkpoint folder or Hub id (default: the shipped tiny model)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--dtype", default="auto", choices=DTYPES)
    parser.add_argument("--revision", default=None, help="Hub revision of --model")
    parser.add_argument(
        "--server-name",
        default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="address to listen on (default: $GRADIO_SERVER_NAME or %(default)s; 0.0.0.0 for every interface)",
    )
    parser.add_argument(
        "--server-port",
        type=int,
        default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        help="default: %(default)s",
    )
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument(
        "--max-file-mb", type=float, default=DEFAULT_MAX_FILE_MB, help="largest upload in MB (default: %(default)s)"
    )
    parser.add_argument(
        "--max-video-seconds",
        type=float,
        default=None,
        help="refuse longer videos (default: the processor's limit; can only lower it)",
    )
    parser.add_argument("--examples", type=int, default=3, help="synthetic example videos to offer (default: 3)")
    parser.set_defaults(run=_app_command)

    space = commands.add_parser(
        "export-space",
        help="write a Hugging Face Space folder that runs `videotgb app` on a Hub model",
        description="Write app.py, requirements.txt and README.md (the Space's metadata: sdk gradio, its version, "
        "the model) into --out. Upload it to a Space with `hf upload OWNER/SPACE DIR --repo-type space`. See "
        "docs/app.md.",
    )
    space.add_argument("--model", required=True, metavar="OWNER/NAME", help="the model's Hub id")
    space.add_argument("--out", required=True, metavar="DIR", help="folder to write (empty unless --overwrite)")
    space.add_argument("--overwrite", action="store_true", help="replace the files this command writes in --out")
    space.add_argument("--title", default=None, help="the Space's title (default: the model's name)")
    space.add_argument("--emoji", default="🎞️", help="the Space's emoji (default: %(default)s)")
    space.add_argument("--license", default=None, help="license id of the Space (e.g. apache-2.0)")
    space.add_argument(
        "--package",
        default=None,
        metavar="REQUIREMENT",
        help="how the Space installs videotgb (default: videotgb==THIS_VERSION from PyPI; e.g. "
        "git+https://github.com/OWNER/videotgb@TAG)",
    )
    space.set_defaults(run=_export_space_command)


def create_app(
    model: str | None,
    examples_dir: str | os.PathLike,
    device: str | None = None,
    dtype: str = "auto",
    revision: str | None = None,
    max_file_mb: float = DEFAULT_MAX_FILE_MB,
    max_video_seconds: float | None = None,
    examples: int = 3,
):
    """Load `model` (a folder or Hub id; None: the shipped tiny model) and build its page, with `examples` synthetic
    videos written into `examples_dir` (serve it: ``launch(allowed_paths=[examples_dir])``). ValueError naming the
    flag for a limit that is not positive. Returns the Gradio `Blocks`."""
    from .cli import load_model, load_processor, resolve_device
    from .demo import DEFAULT_MODEL, recipe_of

    if max_file_mb <= 0:
        raise ValueError(f"--max-file-mb {max_file_mb:g}: must be positive")
    if max_video_seconds is not None and max_video_seconds <= 0:
        raise ValueError(f"--max-video-seconds {max_video_seconds:g}: must be positive")
    target = resolve_device(device)
    model_path = model or str(DEFAULT_MODEL)
    processor = load_processor(model_path, revision)
    if max_video_seconds is not None:
        limit = processor.max_video_duration_s
        processor.max_video_duration_s = min(max_video_seconds, limit or float("inf"))
    loaded = load_model(model_path, dtype, target, revision)
    processor.check_model_config(loaded.config)
    recipe = recipe_of(model_path) if Path(model_path).is_dir() else None
    chat = VideoChat(loaded, processor, recipe, max_file_mb)
    videos = synthetic_examples(recipe or recipe_of(DEFAULT_MODEL), examples_dir, examples) if examples > 0 else []
    name = "videotgb/default_model" if model is None else model
    return build_app(chat, videos, title=f"VideoTGB: {name}")


def _app_command(arguments: argparse.Namespace) -> int:
    examples_dir = Path(tempfile.mkdtemp(prefix="videotgb-app-"))
    try:
        demo = create_app(
            arguments.model,
            examples_dir,
            device=arguments.device,
            dtype=arguments.dtype,
            revision=arguments.revision,
            max_file_mb=arguments.max_file_mb,
            max_video_seconds=arguments.max_video_seconds,
            examples=arguments.examples,
        )
        demo.queue().launch(
            server_name=arguments.server_name,
            server_port=arguments.server_port,
            share=arguments.share,
            max_file_size=f"{arguments.max_file_mb:g}mb",
            allowed_paths=[str(examples_dir)],
        )
    finally:
        shutil.rmtree(examples_dir, ignore_errors=True)
    return 0


# ---- the Space --------------------------------------------------------------------------------------------------

SPACE_APP = '''\
"""Hugging Face Space: the videotgb chat demo (`videotgb app`) on {model}."""

import sys

from videotgb.app import main

if __name__ == "__main__":
    sys.exit(main(["--model", "{model}"]))
'''


def space_requirements(package: str | None = None) -> list[str]:
    """The Space's requirements.txt lines: videotgb (`package`, default ``videotgb==<this version>`` from PyPI, so
    the Space runs the code the export was made with) and the Gradio of this app."""
    from . import __version__

    return [package or f"videotgb=={__version__}", f"gradio=={GRADIO_VERSION}"]


def space_card(model_id: str, title: str | None = None, emoji: str = "🎞️", license: str | None = None):
    """The Space's `huggingface_hub.SpaceCard`: metadata (sdk gradio and its version, app file, the model) and a
    short description."""
    from huggingface_hub import SpaceCard, SpaceCardData

    title = title or f"VideoTGB: {model_id.rsplit('/', 1)[-1]}"
    data = SpaceCardData(
        title=title,
        sdk="gradio",
        sdk_version=GRADIO_VERSION,
        app_file="app.py",
        license=license,
        models=[model_id],
        emoji=emoji,
        colorFrom="indigo",
        colorTo="green",
        pinned=False,
        short_description="Video QA that shows which moments the model looked at",
    )
    body = f"""
# {title}

Ask questions about a video with [{model_id}](https://huggingface.co/{model_id}), a VideoTGB model: a small Temporal
Grounding Bridge reads optical flow and the question, picks the keyframes the answer is read from, and the page shows
them with their times, the bridge's span probability over the whole video and the flow at each chosen moment.

Made by `videotgb export-space`; the same page runs locally with `videotgb app --model {model_id}`.
"""
    return SpaceCard(f"---\n{data.to_yaml()}\n---\n{body}")


SPACE_FILES = ("app.py", "requirements.txt", "README.md")


def export_space(
    model_id: str,
    out: str | os.PathLike,
    overwrite: bool = False,
    title: str | None = None,
    emoji: str = "🎞️",
    license: str | None = None,
    package: str | None = None,
) -> Path:
    """Write a Space folder that runs this app on the Hub model `model_id`: :data:`SPACE_FILES`. Refuses a folder
    already holding any of them unless `overwrite`. Returns `out` as a Path."""
    from .hub_upload import check_repo_id

    check_repo_id(model_id, "--model")
    out = Path(out)
    present = [name for name in SPACE_FILES if (out / name).exists()]
    if present and not overwrite:
        raise FileExistsError(f"--out {out}: already holds {', '.join(present)}; pass --overwrite to replace them")
    out.mkdir(parents=True, exist_ok=True)
    (out / "app.py").write_text(SPACE_APP.format(model=model_id), encoding="utf-8")
    (out / "requirements.txt").write_text("\n".join(space_requirements(package)) + "\n", encoding="utf-8")
    space_card(model_id, title, emoji, license).save(out / "README.md")
    return out


def _export_space_command(arguments: argparse.Namespace) -> int:
    out = export_space(
        arguments.model,
        arguments.out,
        overwrite=arguments.overwrite,
        title=arguments.title,
        emoji=arguments.emoji,
        license=arguments.license,
        package=arguments.package,
    )
    print(f"wrote the Space for {arguments.model} into {out}: {', '.join(SPACE_FILES)}")
    print(f"upload it with: hf upload OWNER/SPACE_NAME {out} --repo-type space")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m videotgb.app ARGS`: the same as `videotgb app ARGS`."""
    from .cli import main as cli_main

    return cli_main(["app", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
