"""A data set's manifest: `spec.json` beside its annotation files, written by a generator (the embedded synthetic
one writes its settings there), so that a model card can say how the data was made. Any writer may leave one."""

import json
from pathlib import Path
from typing import Any


MANIFEST_NAME = "spec.json"
# The fields a manifest carries: the class list, the generator's seed and the format version of what it wrote.
MANIFEST_FIELDS = {"classes", "seed", "format_version"}


def read_manifest(annotation: str | Path) -> dict[str, Any] | None:
    """The manifest of the data set an annotation file belongs to (its folder's `spec.json`), or None when it has
    none (any data not written by a generator)."""
    path = Path(annotation).parent / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and MANIFEST_FIELDS <= manifest.keys() else None
