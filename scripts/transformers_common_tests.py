"""Run Transformers' own common model, config and video-processor tests on a tiny HESP (issue 36).

The mixins live in the transformers repository's `tests/` folder, which the wheel does not ship; the source
distribution of the installed version does. This script downloads it with pip into a scratch folder (outside the
repository: nothing is vendored), adds empty stand-ins for the three helper modules the 5.x sdist leaves out
(`tests/exporters/test_export.py`, `tests/generation/test_utils.py`, `tests/utils/test_configuration_utils.py`),
copies `scripts/transformers_common/test_modeling_hesp.py` in as `tests/models/hesp/`, and runs pytest there.

    python scripts/transformers_common_tests.py --workdir /tmp/hf-common   # then read the pytest summary

Expected on transformers 5.24: everything that applies passes but `test_can_load_ignoring_mismatched_shapes`, which
writes a float into the list-valued `image_std` of HESP's strict config (skipped upstream for models with such fields).
"""

import argparse
import logging
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import transformers


HERE = Path(__file__).resolve().parent
STAND_INS = {
    "exporters/test_export.py": "class ExportTesterMixin:  # the exporter tests are not in the sdist\n    pass\n",
    "generation/test_utils.py": "class GenerationTesterMixin:  # HESP does not generate\n    pass\n",
    # Read only by ConfigTester.check_config_arguments_init, which returns early for composite configs (HESP's).
    "utils/test_configuration_utils.py": "config_common_kwargs = {}\n",
}
logger = logging.getLogger("transformers_common_tests")


def prepare(workdir: Path) -> Path:
    """The scratch folder with the installed transformers version's `tests/`, the stand-ins and HESP's tester."""
    version = transformers.__version__
    tests = workdir / "tests"
    if not (tests / "test_modeling_common.py").exists():
        workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", f"transformers=={version}", "--no-binary", ":all:"]
            + ["--no-deps", "--no-build-isolation", "-d", str(workdir)],
            check=False,  # the archive is saved before pip tries to build its metadata
        )
        archive = workdir / f"transformers-{version}.tar.gz"
        if not archive.exists():
            raise SystemExit(f"Could not download the transformers {version} source distribution into {workdir}.")
        with tarfile.open(archive) as sdist:
            members = [m for m in sdist.getmembers() if m.name.startswith(f"transformers-{version}/tests/")]
            sdist.extractall(workdir, members=members, filter="data")
        shutil.move(str(workdir / f"transformers-{version}" / "tests"), tests)
    for relative, text in STAND_INS.items():
        path = tests / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(text)
    hesp = tests / "models" / "hesp"
    hesp.mkdir(parents=True, exist_ok=True)
    for package in (tests, tests / "models", hesp, tests / "exporters", tests / "generation", tests / "utils"):
        (package / "__init__.py").touch()
    shutil.copy(HERE / "transformers_common" / "test_modeling_hesp.py", hesp / "test_modeling_hesp.py")
    return hesp / "test_modeling_hesp.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hf-common"), help="scratch folder")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (e.g. -k attention)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        import parameterized  # noqa: F401 -- the mixins need it
    except ImportError:
        raise SystemExit("The common tests need `parameterized`: pip install parameterized") from None
    test_file = prepare(args.workdir.resolve())
    logger.info("Running %s with transformers %s", test_file, transformers.__version__)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", "-rfEs"]
    done = subprocess.run([*command, str(test_file), *args.pytest_args], cwd=args.workdir)
    raise SystemExit(done.returncode)


if __name__ == "__main__":
    main()
