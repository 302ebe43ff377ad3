"""The package outside the checkout: the wheel a user installs holds every file the code reads, and builds silently."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
LEFT_OUT = (".git", ".venv", "build", "dist", "outputs", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the checkout (the build writes into the source folder), with the build's log."""
    pytest.importorskip("setuptools")
    source = tmp_path_factory.mktemp("source") / "hesp-hf"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*LEFT_OUT), symlinks=True)
    link = source / "hesp_hf" / "modeling"
    if link.is_symlink():  # a link to modeling/ some checkouts keep for their editable installs
        link.unlink()
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (built,) = out.glob("hesp_hf-*.whl")
    return built, done.stdout + done.stderr


def test_the_wheel_builds_without_a_warning(wheel):
    _, log = wheel
    warnings = [line for line in log.splitlines() if "Warning" in line or "warning:" in line.lower()]
    assert not warnings, warnings


def test_the_wheel_holds_the_data_the_code_reads_and_the_commands(wheel):
    built, _ = wheel
    with zipfile.ZipFile(built) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assets = "hesp_hf/embedded/assets/tiny-face-clip/"
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "tokenizer.json", "build_info.json"):
        assert assets + name in names, name  # the embedded CLIP, without which nothing runs offline
    for name in ("oscr.py", "README.md", "requirements.txt"):
        assert f"hesp_hf/metrics/oscr/{name}" in names, name  # the evaluate module folder, whole
    assert "hesp_hf/model_cards/hesp_model_card.md" in names
    modeling = {Path(n).name for n in names if n.startswith("hesp_hf/modeling/")}
    assert {"modeling_hesp.py", "configuration_hesp.py", "video_processing_hesp.py"} <= modeling
    assert not [n for n in names if n.startswith(("modeling/", "tests/", "scripts/"))]  # no generic top-level names
    commands = {line.split("=")[0].strip() for line in entry_points.splitlines() if "=" in line}
    assert {"hesp-demo", "hesp-app", "hesp-train", "hesp-predict", "hesp-timeline"} <= commands
