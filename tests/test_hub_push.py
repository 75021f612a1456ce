"""`videotgb push`: an export reaches the Hub as one commit through `huggingface_hub`, here against a Hub stand-in on
loopback (tests/hub_server.py, `HF_ENDPOINT`) that records every request. The token is sent but never shown; what
is not an intact export (a pickle, a file the export did not write, a card for another repo) is refused before any
request; a failed commit leaves the repo as it was."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import assert_one_line_error, run_cli
from hub_server import Repo, start

from videotgb.demo import DEFAULT_MODEL
from videotgb.hub_upload import MANIFEST_NAME, check_export, export, plan_push

REPO = "someone/videotgb-tiny"
TOKEN = "hf_testSecretToken0123456789abcdefXYZ"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The shipped tiny model exported once for `REPO`, with its model card; tests copy it before changing it."""
    return export(DEFAULT_MODEL, tmp_path_factory.mktemp("push") / "videotgb-tiny", repo_id=REPO)


@pytest.fixture
def hub():
    server = start()
    yield server
    server.server.shutdown()


def push(hub, tmp_path, *argv: str, token: str | None = TOKEN) -> subprocess.CompletedProcess:
    """`videotgb push ARGV` in a new process pointed at the stand-in, with debug logging on everywhere, no stored
    token (a fresh HF_HOME) and `token` as HF_TOKEN."""
    env = {key: value for key, value in os.environ.items() if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HUB_OFFLINE="0",
        HF_HOME=str(tmp_path / "hf_home"),
        HF_HUB_VERBOSITY="debug",
        TRANSFORMERS_VERBOSITY="debug",
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    if token is not None:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "videotgb.cli", "push", *argv], env=env, capture_output=True, text=True, timeout=120
    )


def export_files(folder) -> dict[str, bytes]:
    names = [*check_export(folder)["files"], MANIFEST_NAME]
    return {name: (folder / name).read_bytes() for name in names}


def test_push_commits_every_file_in_one_commit_and_never_shows_the_token(exported, hub, tmp_path):
    result = push(hub, tmp_path, "--folder", str(exported), "--repo-id", REPO, "--private")
    assert result.returncode == 0, result.stderr[-3000:]
    repo = hub.repos[REPO]
    assert repo.private
    assert hub.files(REPO) == export_files(exported)  # every file, byte for byte, on the default branch
    assert len(hub.requests_to(r"/commit/")) == 1 and len(repo.commits) == 1
    assert repo.commits[0]["header"]["summary"].startswith("Upload VideoTGB export")
    assert all(request.headers.get("authorization") == f"Bearer {TOKEN}" for request in hub.requests)
    assert TOKEN not in result.stdout + result.stderr  # not even in debug logs
    assert f"commit: {hub.url}/{REPO}/commit/" in result.stdout
    assert "config.json" in result.stdout and "examples/video.mp4" in result.stdout


def test_a_new_push_deletes_stale_weights_and_code_and_keeps_other_files(exported, hub, tmp_path):
    hub.repos[REPO] = Repo(
        private=False,
        branches={
            "main": {
                "model-00001-of-00002.safetensors": b"old shard",
                "model.safetensors.index.json": b"{}",
                "pytorch_model.bin": b"old pickle",
                "old_modeling.py": b"print()",
                "notes.md": b"the owner's notes",
                ".gitattributes": b"*.safetensors filter=lfs",
            }
        },
    )
    result = push(hub, tmp_path, "--folder", str(exported), "--repo-id", REPO, "--commit-message", "v2")
    assert result.returncode == 0, result.stderr[-3000:]
    files = hub.files(REPO)
    assert files == {
        **export_files(exported),
        "notes.md": b"the owner's notes",
        ".gitattributes": files[".gitattributes"],
    }
    assert not hub.repos[REPO].private  # an existing repo keeps its visibility
    assert hub.repos[REPO].commits[0]["header"]["summary"] == "v2"
    for stale in ("model-00001-of-00002.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        assert f"delete {stale}" in result.stdout


def test_a_branch_and_a_pull_request(exported, hub, tmp_path):
    result = push(hub, tmp_path, "--folder", str(exported), "--repo-id", REPO, "--revision", "tiny-v1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert hub.files(REPO, "tiny-v1") == export_files(exported)
    assert hub.files(REPO, "main") == {}

    result = push(hub, tmp_path, "--folder", str(exported), "--repo-id", REPO, "--create-pr")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"pull request: {hub.url}/{REPO}/discussions/1" in result.stdout
    assert hub.repos[REPO].pull_requests == [export_files(exported)]
    assert hub.files(REPO, "main") == {}  # the pull request changed no branch


def test_dry_run_lists_files_and_sizes_without_a_token_or_any_request(exported, hub, tmp_path):
    result = push(hub, tmp_path, "--folder", str(exported), "--repo-id", REPO, "--dry-run", token=None)
    assert result.returncode == 0, result.stderr[-3000:]
    assert hub.requests == []
    plan = plan_push(exported, REPO)
    assert set(plan.files) == set(export_files(exported))
    assert "model.safetensors" in result.stdout and "dry run: nothing was uploaded" in result.stdout
    assert f"{len(plan.files)} files" in result.stdout


def test_a_missing_token_is_one_line_naming_the_ways_to_give_one(exported, hub, tmp_path):
    result = push(hub, tmp_path, "--folder", str(exported), "--repo-id", REPO, token=None)
    assert_one_line_error(result.returncode, result.stderr, "videotgb push: error:", "HF_TOKEN", "hf auth login")
    assert hub.requests == []


def test_a_failed_commit_leaves_the_repo_without_any_file(exported, hub, tmp_path):
    hub.fail_commit = True
    result = push(hub, tmp_path, "--folder", str(exported), "--repo-id", REPO)
    assert result.returncode == 2 and "videotgb push: error:" in result.stderr
    assert TOKEN not in result.stdout + result.stderr
    assert hub.files(REPO) == {}


class TestRefusedBeforeAnyRequest:
    """Checked in this (offline) process: each refusal comes before the Hub is contacted."""

    def dry_run(self, folder, repo=REPO):
        return run_cli("push", "--folder", str(folder), "--repo-id", repo, "--dry-run")

    @pytest.mark.parametrize("name", ["pytorch_model.bin", "examples/model.pt"])
    def test_a_pickle_file(self, exported, tmp_path, name):
        folder = shutil.copytree(exported, tmp_path / "copy")
        (folder / name).write_bytes(b"pickle")
        status, _, err = self.dry_run(folder)
        assert_one_line_error(status, err, "refusing pickle files", name)

    def test_a_file_the_export_did_not_write(self, exported, tmp_path):
        folder = shutil.copytree(exported, tmp_path / "copy")
        (folder / "notes.txt").write_text("added by hand")
        status, _, err = self.dry_run(folder)
        assert_one_line_error(status, err, "files the export did not write", "notes.txt")

    def test_a_card_written_for_another_repo(self, exported):
        status, _, err = self.dry_run(exported, "someone-else/videotgb-tiny")
        assert_one_line_error(status, err, "README.md", "written for another repo", "--repo-id someone-else/")

    def test_an_export_without_a_card(self, tmp_path):
        folder = export(DEFAULT_MODEL, tmp_path / "no-card")
        status, _, err = self.dry_run(folder)
        assert_one_line_error(status, err, "no model card", f"--repo-id {REPO}")

    def test_a_repo_id_that_is_not_owner_name(self, exported):
        status, _, err = self.dry_run(exported, "no-owner")
        assert_one_line_error(status, err, "--repo-id 'no-owner'", "owner/name")
