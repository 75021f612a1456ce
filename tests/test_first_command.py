"""The README's two commands: a plain `pip install videotgb` runs the first one (the demo), and CI runs both exactly
as the README writes them."""

from __future__ import annotations

import configparser
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def base_requirements() -> list[Requirement]:
    """`install_requires` of setup.cfg: what `pip install videotgb` installs, without extras."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    return [Requirement(line) for line in lines if line.strip()]


def plain_install_distributions() -> set[str]:
    """The distributions a plain install brings: the base requirements and, recursively, what they require."""
    pending = [canonicalize_name(requirement.name) for requirement in base_requirements()]
    closure = {"pip", "setuptools", "videotgb"}  # a new virtualenv has pip; the package itself
    while pending:
        name = pending.pop()
        if name in closure:
            continue
        closure.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(canonicalize_name(requirement.name))
    return closure


def modules_beyond_a_plain_install() -> list[str]:
    """Top-level modules installed here (for tests, training, ...) that a plain install would not have."""
    closure = plain_install_distributions()
    return sorted(
        module
        for module, distributions in importlib.metadata.packages_distributions().items()
        if not any(canonicalize_name(distribution) in closure for distribution in distributions)
    )


DEMO_WITH_ONLY_THE_PLAIN_INSTALL = textwrap.dedent(
    """
    import json
    import sys

    for name in json.loads(sys.argv[1]):
        sys.modules[name] = None  # as if not installed: importing it raises ImportError, find_spec finds nothing
    from videotgb.cli import main

    sys.exit(main(["demo", "--output", sys.argv[2]]))
    """
)


def test_the_default_flow_estimator_is_installed_by_a_plain_install():
    from videotgb.optical_flow import FlowConfig

    providers = importlib.metadata.packages_distributions()
    module = {"dis": "cv2", "farneback": "cv2", "raft_small": "torchvision", "raft_large": "torchvision"}
    needed = {canonicalize_name(name) for name in providers[module[FlowConfig().estimator]]}
    assert needed & plain_install_distributions(), f"{needed} is not installed by `pip install videotgb`"


@pytest.mark.slow
def test_the_demo_runs_with_only_what_a_plain_install_provides(tmp_path):
    blocked = modules_beyond_a_plain_install()
    assert "deepspeed" in blocked and "pytest" in blocked  # the dev install has them; a plain one does not
    result = subprocess.run(
        [sys.executable, "-c", DEMO_WITH_ONLY_THE_PLAIN_INSTALL, json.dumps(blocked), str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "keyframes: " in result.stdout
    assert "Traceback" not in result.stderr and "Setting accelerator" not in result.stderr


def readme_commands() -> list[str]:
    """The command lines of the README's "Two commands" block, in order."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Two commands", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_ci_runs_the_readme_commands_exactly_and_in_order():
    commands = readme_commands()
    assert len(commands) == 2
    assert "videotgb demo" in commands[0] and "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    ci_commands = [line for line in ci if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci_commands == commands
