"""The house rules of the package layout (docs/architecture.md), checked on every module's imports with `ast`."""

import ast
import importlib
import sys
from pathlib import Path

import pytest

import hesp_hf


REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "hesp_hf"
CORE = (
    "pairing",
    "atomic_files",
    "calibration",
    "data",
    "metrics",
    "training",
    "evaluation",
    "inference",
    "hub",
    "run",
    "app",
)


def imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved against `package`), at any depth."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def modules_of(folder: Path, package: str) -> dict[Path, set[str]]:
    found = {}
    for path in folder.rglob("*.py"):
        inner = path.parent.relative_to(folder).parts
        found[path] = imported_modules(path, ".".join((package, *inner)))
    return found


def test_modeling_imports_no_hesp_hf():
    # The files that travel inside checkpoints load where hesp_hf is not installed.
    for path, names in modules_of(REPO / "modeling", "hesp_hf.modeling").items():
        outside = {n for n in names if n.startswith("hesp_hf") and not n.startswith("hesp_hf.modeling")}
        assert not outside, f"{path.name} imports {sorted(outside)}"


@pytest.mark.parametrize("room", CORE)
def test_the_core_never_imports_the_embedded_default_or_the_commands(room):
    target = PACKAGE / room
    files = (
        modules_of(target, f"hesp_hf.{room}")
        if target.is_dir()
        else {target.with_suffix(".py"): imported_modules(target.with_suffix(".py"), "hesp_hf")}
    )
    for path, names in files.items():
        forbidden = {n for n in names if n.startswith(("hesp_hf.embedded", "hesp_hf.commands"))}
        assert not forbidden, f"{path.relative_to(REPO)} imports {sorted(forbidden)}"


def test_metrics_take_only_the_unknown_label_id_from_the_model():
    for path, names in modules_of(PACKAGE / "metrics", "hesp_hf.metrics").items():
        model_code = {n for n in names if n.startswith("hesp_hf.modeling")}
        assert model_code <= {"hesp_hf.modeling.modeling_hesp", "hesp_hf.modeling.modeling_hesp.UNKNOWN_LABEL_ID"}, (
            f"{path.name} imports {sorted(model_code)}"
        )


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def package_files() -> dict[Path, str]:
    """Every module of the package (`modeling/` as the `hesp_hf.modeling` it is installed as) with its package."""
    files = {}
    for folder, package in ((PACKAGE, "hesp_hf"), (REPO / "modeling", "hesp_hf.modeling")):
        for path in folder.rglob("*.py"):
            if path.is_relative_to(PACKAGE / "modeling"):
                continue  # a link to modeling/ some checkouts keep; walked as modeling/
            files[path] = ".".join((package, *path.parent.relative_to(folder).parts))
    return files


def test_no_module_imports_another_modules_private_name():
    # What several modules share gets a public name in a module of its own (docs/architecture.md, "Import rules").
    for path, package in package_files().items():
        found = set()
        for name in imported_modules(path, package):
            if any(_private(part) for part in name.split(".")):
                found.add(name)
        assert not found, f"{path.relative_to(REPO)} imports private names {sorted(found)}"


def room_of(name: str) -> str | None:
    """`hesp_hf.<room>` for a module inside the package: its subpackage, or a flat module (its own room)."""
    parts = name.split(".")
    return parts[1] if parts[0] == "hesp_hf" and len(parts) > 1 else None


def test_no_two_rooms_import_each_other():
    uses: dict[str, set[str]] = {}
    for path, package in package_files().items():
        room = room_of(package) if package != "hesp_hf" else path.stem
        for name in imported_modules(path, package):
            other = room_of(name)
            if other is not None and other != room:
                uses.setdefault(room, set()).add(other)
    both_ways = sorted(
        f"{room} <-> {other}" for room, others in uses.items() for other in others if room in uses.get(other, ())
    )
    assert not both_ways, both_ways


def test_the_rules_see_a_private_import_and_a_cycle(tmp_path):
    # The two walks above find what they look for, on a module written to break both rules.
    module = tmp_path / "bad.py"
    module.write_text("from .prediction import _decoded_in_background\nfrom ..training.trainer import HESPTrainer\n")
    names = imported_modules(module, "hesp_hf.evaluation")
    assert "hesp_hf.evaluation.prediction._decoded_in_background" in names
    assert room_of("hesp_hf.training.trainer.HESPTrainer") == "training"


def test_at_most_14_modules_sit_flat_in_the_package():
    flat = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(flat) <= 14, flat


@pytest.mark.parametrize("old", ["hesp_hf.recipe", "hesp_hf.synthetic", "hesp_hf.prediction"])
def test_pre_restructure_paths_are_gone_without_an_import_hook(old):
    # The package has had no release: no shim keeps old paths alive (CHANGELOG.md lists where each went).
    sys.modules.pop(old, None)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)
    assert not [finder for finder in sys.meta_path if type(finder).__module__.startswith("hesp_hf")]


def test_the_top_level_train_is_the_run_library_call():
    from hesp_hf.run.train import train as run_train

    assert hesp_hf.train.__module__ == "hesp_hf" and callable(run_train)  # the top-level entry point is unchanged
