"""Module paths of hesp-hf 0.1 (`hesp_hf.synthetic`, `hesp_hf.recipe`, ...) that moved into subpackages: importing one
still works for this release, with a `FutureWarning` naming the new home. Removed in the next release."""

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any


# old module -> the new modules whose public names it offered (searched in order)
MOVED: dict[str, tuple[str, ...]] = {
    "hesp_hf.arguments": ("hesp_hf.run.arguments",),
    "hesp_hf.baselines": ("hesp_hf.evaluation.baselines",),
    "hesp_hf.cli": ("hesp_hf.commands.cli",),
    "hesp_hf.export": ("hesp_hf.inference.export",),
    "hesp_hf.model_card": ("hesp_hf.hub.model_card",),
    "hesp_hf.onnx_runtime": ("hesp_hf.inference.onnx_runtime",),
    "hesp_hf.prediction": ("hesp_hf.inference.prediction",),
    "hesp_hf.recipe": ("hesp_hf.run.train", "hesp_hf.run.setup", "hesp_hf.run.outputs", "hesp_hf.commands.train"),
    "hesp_hf.synthetic": ("hesp_hf.embedded.synthetic",),
    "hesp_hf.synthetic_protocol": ("hesp_hf.embedded.protocol",),
    "hesp_hf.tiny_clip": ("hesp_hf.embedded.tiny_clip",),
    "hesp_hf.video_writer": ("hesp_hf.embedded.video_writer",),
}


class _MovedModule(types.ModuleType):
    """Stands in for an old module: every attribute is looked up in the new modules, in order."""

    def __init__(self, name: str, targets: tuple[str, ...]):
        super().__init__(name, f"Moved: see {', '.join(targets)}.")
        self._targets = [importlib.import_module(target) for target in targets]

    def __getattr__(self, attribute: str) -> Any:
        for module in self._targets:
            if hasattr(module, attribute):
                return getattr(module, attribute)
        raise AttributeError(f"module {self.__name__!r} (moved to {self._targets[0].__name__}) has no {attribute!r}")

    def __dir__(self) -> list[str]:
        return sorted({name for module in self._targets for name in dir(module)})


class _MovedModuleLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        targets = MOVED[spec.name]
        warnings.warn(
            f"`{spec.name}` moved to `{targets[0]}`; the old path works in hesp-hf 0.1 only.",
            FutureWarning,
            stacklevel=2,
        )
        return _MovedModule(spec.name, targets)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedModuleLoader())


def install() -> None:
    """Put the finder of the moved modules on `sys.meta_path` (once)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
