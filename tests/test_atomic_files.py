"""Outputs written whole or not at all, with the file mode any other file would get."""

import os

import pytest

from hesp_hf.atomic_files import atomic_output, write_text_atomic


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_respect_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = write_text_atomic(tmp_path / "metrics.json", "{}\n")
    finally:
        os.umask(previous)
    assert path.read_text() == "{}\n"
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text_atomic(tmp_path / "card.md", "old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_output(target) as temporary:
            temporary.write_text("new, half written")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["card.md"]
