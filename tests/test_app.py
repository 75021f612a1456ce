"""`videotgb app` (the Gradio chat page) and `videotgb export-space`: the handlers decode a video once per conversation,
stream the answer, put every refusal in the page as a message; the page works in a real headless browser."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli
from torchvision.utils import flow_to_image

from videotgb.app import Settings, VideoChat, export_space, space_requirements
from videotgb.cli import answer_question, build_parser, load_model, load_processor
from videotgb.demo import DEFAULT_MODEL, demo_scene, recipe_of
from videotgb.synthetic import encode_scene

ARTIFACTS = Path(__file__).parent / "artifacts"


class Counted:
    """Wraps a function and counts its calls."""

    def __init__(self, method):
        self.method, self.calls = method, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.method(*args, **kwargs)


@pytest.fixture(scope="module")
def shipped():
    """The shipped tiny model, its processor and recipe on the CPU."""
    processor = load_processor(str(DEFAULT_MODEL))
    model = load_model(str(DEFAULT_MODEL), device="cpu")
    return model, processor, recipe_of(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def scene_video(tmp_path_factory):
    """Synthetic test video 1 of the shipped model's recipe, encoded: (path, scene)."""
    scene = demo_scene(recipe_of(DEFAULT_MODEL), 1)
    path = tmp_path_factory.mktemp("app_video") / "scene.mp4"
    path.write_bytes(encode_scene(scene))
    return path, scene


def count_decodes(monkeypatch) -> Counted:
    """Count the processor's video decodes (`read_video` calls behind `processor.load_video`)."""
    import videotgb.processing_videotgb as processing

    decodes = Counted(processing.read_video)
    monkeypatch.setattr(processing, "read_video", decodes)
    return decodes


@pytest.fixture
def chat(shipped, monkeypatch):
    """A `VideoChat` over the shipped model; `chat.decodes` and `chat.flows` count decodes and flow computations."""
    model, processor, recipe = shipped
    chat = VideoChat(model, processor, recipe)
    chat.decodes = count_decodes(monkeypatch)
    chat.flows = Counted(processor.video_flow)
    monkeypatch.setattr(processor, "video_flow", chat.flows)
    return chat


def cli_error(*argv: str) -> tuple[int, str]:
    status, _, err = run_cli(*argv)
    return status, err


def last_reply(turns) -> str:
    return turns[-1].history[-1]["content"]


def test_a_video_is_decoded_and_its_flow_computed_once_per_conversation(chat, scene_video):
    path, scene = scene_video
    video, status = chat.open_video(path)
    assert "Opened `scene.mp4`" in status and "32 candidate frames" in status
    history = []
    for question in (scene.question, "What colour is the shape that moves up?"):
        turns = list(chat.ask(question, history, video, Settings(keyframes=4, max_new_tokens=8)))
        history = turns[-1].history
    assert [message["role"] for message in history] == ["user", "assistant"] * 2
    assert (chat.decodes.calls, chat.flows.calls) == (1, 1)
    chat.open_video(path)  # a new video starts a new conversation: decoded again
    assert (chat.decodes.calls, chat.flows.calls) == (2, 2)


def test_the_answer_keyframes_flows_and_plot_match_the_command_line(chat, scene_video):
    """Greedy answers and keyframes are those of `videotgb answer`; the flow pictures are the flow steps nearest the
    keyframes; the plot is the bridge's span probability."""
    path, scene = scene_video
    video, _ = chat.open_video(path)
    turns = list(chat.ask(scene.question, [], video, Settings(keyframes=4, max_new_tokens=8)))
    expected = answer_question(chat.model, chat.processor, video.clip, scene.question, max_new_tokens=8)
    assert last_reply(turns) == expected.text == scene.answer
    final = turns[-1]
    assert [caption for _, caption in final.keyframes] == [
        f"#{number + 1}: {seconds:.2f} s" for number, seconds in enumerate(expected.keyframe_timestamps)
    ]
    assert all(image.shape == (192, 192, 3) and image.dtype == np.uint8 for image, _ in final.keyframes)
    steps = np.asarray(video.clip.flow_timestamps)
    for (image, caption), seconds in zip(final.flows, expected.keyframe_timestamps, strict=True):
        nearest = int(np.argmin(np.abs(steps - seconds)))
        assert caption == f"flow {steps[nearest]:.2f} s"
        colours = flow_to_image(video.flow[nearest]).permute(1, 2, 0).numpy()  # 32 x 32, shown 6 times larger
        np.testing.assert_array_equal(image, colours.repeat(6, 0).repeat(6, 1))
    curve = final.figure.axes[-1].lines[0]
    assert curve.get_label() == "bridge: P(in span)"
    assert len(curve.get_xdata()) == len(video.flow) and 0 <= min(curve.get_ydata()) <= max(curve.get_ydata()) <= 1
    assert all(turn.figure is None for turn in turns[:-1])  # drawn once, when the answer is complete
    # K from the control: 6 keyframes, and beam search (which cannot stream) gives the whole answer at once
    turns = list(chat.ask(scene.question, [], video, Settings(keyframes=6, beams=3, max_new_tokens=8)))
    assert len(turns[-1].keyframes) == len(turns[-1].flows) == 6
    assert [last_reply([turn]) for turn in turns] == ["…", last_reply(turns)] + [last_reply(turns)]


def test_refusals_are_chat_messages_and_the_next_question_works(chat, scene_video, tmp_path, monkeypatch):
    path, scene = scene_video
    bad = tmp_path / "holiday.mp4"
    bad.write_text("not a video")
    video, status = chat.open_video(bad)
    assert video is None and status.startswith("**Error:** `holiday.mp4` cannot be used") and "not a video" in status
    monkeypatch.setattr(chat, "max_file_mb", 0.001)
    video, status = chat.open_video(path)
    assert video is None and "more than this app's limit of 0.001 MB" in status
    monkeypatch.setattr(chat, "max_file_mb", 200)
    monkeypatch.setattr(chat.processor, "max_video_duration_s", 10.0)
    video, status = chat.open_video(path)
    assert video is None and "`scene.mp4` cannot be used" in status and "10" in status
    monkeypatch.setattr(chat.processor, "max_video_duration_s", 3600.0)

    replies = [last_reply(list(chat.ask(scene.question, [], None, Settings(keyframes=4))))]
    video, _ = chat.open_video(path)
    for question, settings in [
        ("  ", Settings(keyframes=4)),
        ("What colour is the ball?", Settings(keyframes=4)),
        (scene.question, Settings(keyframes=33)),
        (scene.question, Settings(keyframes=4, sample=True, temperature=0)),
        (scene.question, Settings(keyframes=4, max_new_tokens=0)),
    ]:
        turns = list(chat.ask(question, [], video, settings))
        assert len(turns) == 1 and turns[0].keyframes == [] and turns[0].figure is None
        replies.append(last_reply(turns))
    assert replies == [
        "⚠️ Open a video first (upload one or pick an example).",
        "⚠️ The question is empty",
        "⚠️ The question 'What colour is the ball?': this model was trained only on questions about motion; ask one "
        "with move / moves / moving / moved (e.g. 'What colour is the shape that moves up?')",
        "⚠️ K = 33: choose 1 to 32 keyframes (the candidate frames)",
        "⚠️ temperature = 0: choose a value in (0, 5]",
        "⚠️ max new tokens = 0: choose 1 to 256",
    ]
    assert last_reply(list(chat.ask(scene.question, [], video, Settings(keyframes=4)))) == scene.answer


def test_the_answer_streams_as_growing_text(tiny_checkpoint, scene_video):
    """A tiny random LLaMA with a real 32k tokenizer writes many tokens: each update extends the previous text, and
    the last is the answer `videotgb answer` gives."""
    processor = load_processor(str(tiny_checkpoint))
    model = load_model(str(tiny_checkpoint), device="cpu")
    chat = VideoChat(model, processor)
    path, _ = scene_video
    video, _ = chat.open_video(path)
    question = "What happens after the shape moves?"
    turns = list(chat.ask(question, [], video, Settings(keyframes=model.config.num_keyframes, max_new_tokens=6)))
    texts = [last_reply([turn]) for turn in turns][1:-1]  # after the "…" placeholder, before the final update
    assert len(texts) >= 3
    assert all(
        later.startswith(earlier) and later != earlier for earlier, later in zip(texts, texts[1:], strict=False)
    )
    assert (
        texts[-1]
        == last_reply(turns)
        == answer_question(model, processor, video.clip, question, max_new_tokens=6).text
    )


def test_export_space_writes_app_requirements_and_card(tmp_path):
    from huggingface_hub import SpaceCard

    status, out, err = run_cli("export-space", "--model", "someone/videotgb-tiny", "--out", str(tmp_path / "space"))
    assert status == 0, err
    folder = tmp_path / "space"
    assert sorted(path.name for path in folder.iterdir()) == ["README.md", "app.py", "requirements.txt"]
    card = SpaceCard.load(folder / "README.md")
    assert (
        card.data.sdk == "gradio" and card.data.app_file == "app.py" and card.data.models == ["someone/videotgb-tiny"]
    )
    assert card.data.sdk_version == "6.31.0" and card.data.colorFrom and card.data.emoji
    assert (folder / "requirements.txt").read_text().splitlines() == space_requirements()
    app = (folder / "app.py").read_text()
    compile(app, "app.py", "exec")
    assert 'main(["--model", "someone/videotgb-tiny"])' in app
    assert_one_line_error(
        *cli_error("export-space", "--model", "someone/videotgb-tiny", "--out", str(folder)),
        "already holds",
        "--overwrite",
    )
    assert_one_line_error(*cli_error("export-space", "--model", "not a repo", "--out", str(tmp_path / "x")), "--model")
    export_space("someone/other", folder, overwrite=True, package="git+https://example.invalid/videotgb@v0.1.0")
    assert (folder / "requirements.txt").read_text().startswith("git+https://example.invalid/videotgb@v0.1.0\n")


def test_app_flags():
    """(That building the command line does not import gradio is checked in test_lmms_eval.py, in one process with
    the other libraries it must not import.)"""
    arguments = build_parser().parse_args(["app", "--server-port", "7999", "--share", "--max-video-seconds", "60"])
    assert (arguments.server_name, arguments.server_port, arguments.share) == ("127.0.0.1", 7999, True)
    assert arguments.model is None and arguments.max_video_seconds == 60
    assert_one_line_error(*cli_error("app", "--max-file-mb", "0"), "--max-file-mb 0")
    assert_one_line_error(*cli_error("app", "--max-video-seconds", "-1"), "--max-video-seconds -1")


# ---- the page in a real browser ---------------------------------------------------------------------------------


def _browser(tmp_path):
    """Headless Chromium driven by Selenium (Debian's chromium and chromium-driver), or a skip naming what is
    missing."""
    pytest.importorskip("gradio", reason="gradio is not installed (pip install --no-deps -r requirements-app.txt)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver")
    driver = driver or "/usr/bin/chromedriver"
    for path, package in ((browser, "chromium"), (driver, "chromium-driver")):
        if not Path(path).is_file():
            pytest.skip(f"{path} is missing: install Debian's {package} (bash scripts/setup.sh --dev does)")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for browsers online
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def _wait(driver, condition, what: str, timeout: float = 30.0):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda _: condition())
    except TimeoutException:
        raise AssertionError(f"the page did not show {what} within {timeout:g} s") from None


def _text(driver, elem_id: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.ID, elem_id)
    return " ".join(found[0].text.split()) if found else ""  # code spans render on lines of their own


def _loaded(driver, selector: str) -> int:
    """How many images matching `selector` have loaded (not broken, not pending)."""
    script = "return [...document.querySelectorAll(arguments[0])].filter(i => i.complete && i.naturalWidth > 0).length"
    return driver.execute_script(script, selector)


def _count(driver, selector: str) -> int:
    from selenium.webdriver.common.by import By

    return len(driver.find_elements(By.CSS_SELECTOR, selector))


def _ask(driver, question: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.CSS_SELECTOR, "#question textarea")
    box.clear()
    box.send_keys(question)
    driver.find_element(By.ID, "ask").click()


def _upload(driver, path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "#video input[type=file]").send_keys(str(path.resolve()))


def save_screenshot(driver, name: str, folder: Path) -> Path:
    """Save the whole page as `folder/name` and, as a test artifact, under tests/artifacts/ (git-ignored)."""
    path = folder / name
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, driver.execute_script("return document.body.scrollHeight") + 120)
    driver.save_screenshot(str(path))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / name)
    return path


@pytest.mark.slow
def test_the_page_in_a_headless_browser(scene_video, tmp_path, monkeypatch):
    """Upload a video, ask, see the streamed answer, the keyframes and the plot; ask again without decoding again;
    a file that is not a video gets an error in the page and the page keeps working: a synthetic example opens and
    is answered."""
    started = time.monotonic()
    driver = _browser(tmp_path)
    from selenium.webdriver.common.by import By

    from videotgb.app import create_app

    decodes = count_decodes(monkeypatch)
    demo = create_app(None, tmp_path / "examples", device="cpu")  # as `videotgb app` makes it
    try:
        demo.queue().launch(
            server_name="127.0.0.1",
            server_port=None,
            share=False,
            prevent_thread_lock=True,
            quiet=True,
            allowed_paths=[str(tmp_path / "examples")],
        )
        path, scene = scene_video
        driver.get(demo.local_url)
        _wait(driver, lambda: _count(driver, "#video input[type=file]"), "the upload field")
        _upload(driver, path)
        _wait(driver, lambda: "Opened scene.mp4" in _text(driver, "video-status"), "the opened video")
        _ask(driver, scene.question)
        _wait(driver, lambda: _loaded(driver, "#span-plot img") == 1, "the span plot")
        _wait(driver, lambda: _loaded(driver, "#keyframes img") == 4, "4 keyframes")
        _wait(driver, lambda: _loaded(driver, "#flows img") == 4, "the flow at 4 keyframes")
        assert scene.answer in _text(driver, "chat")
        assert re.search(r"#1: \d+\.\d\d s", _text(driver, "keyframes")), _text(driver, "keyframes")
        save_screenshot(driver, "app.png", tmp_path)

        _ask(driver, "What colour is the shape that moves up?")
        _wait(driver, lambda: "moves up" in _text(driver, "chat"), "the second question")
        _wait(driver, lambda: "…" not in _text(driver, "chat"), "the second answer")
        assert decodes.calls == 1  # the second question reused the conversation's video and flow

        bad = tmp_path / "notes.mp4"
        bad.write_text("not a video")
        driver.get(demo.local_url)  # a new session
        _wait(driver, lambda: _count(driver, "#video input[type=file]"), "the upload field")
        _upload(driver, bad)
        _wait(driver, lambda: "notes.mp4 cannot be used" in _text(driver, "video-status"), "the error message")
        save_screenshot(driver, "app-error.png", tmp_path)
        _ask(driver, scene.question)
        _wait(driver, lambda: "Open a video first" in _text(driver, "chat"), "the refusal")
        assert decodes.calls == 2  # the bad file was tried once

        example = demo_scene(recipe_of(DEFAULT_MODEL), 0)  # the first synthetic example: its video and question
        driver.find_element(By.CSS_SELECTOR, "#examples [data-testid='dataset-cell-0-1']").click()
        _wait(driver, lambda: "Opened synthetic_test_0.mp4" in _text(driver, "video-status"), "the example's video")
        assert driver.find_element(By.CSS_SELECTOR, "#question textarea").get_attribute("value") == example.question
        driver.find_element(By.ID, "ask").click()
        _wait(driver, lambda: _text(driver, "chat").endswith(example.answer), "the example's answer")
        assert decodes.calls == 3
    finally:
        driver.quit()
        demo.close()
    assert time.monotonic() - started < 90


def test_requirements_app_lists_what_gradio_needs_beyond_a_plain_install():
    """requirements-app.txt is installed with --no-deps, so it must name gradio and every distribution gradio needs
    that `pip install videotgb` does not bring, pinned to the versions tested here."""
    import importlib.metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from test_first_command import ROOT, plain_install_distributions

    pytest.importorskip("gradio", reason="gradio is not installed (pip install --no-deps -r requirements-app.txt)")
    lines = (ROOT / "requirements-app.txt").read_text().splitlines()
    pinned = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    plain, needed, pending = plain_install_distributions(), set(), ["gradio"]
    while pending:
        name = canonicalize_name(pending.pop())
        if name in plain or name in needed:
            continue
        needed.add(name)
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    assert {canonicalize_name(name) for name in pinned} == needed
    assert pinned == {name: importlib.metadata.version(name) for name in pinned}
