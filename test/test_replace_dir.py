"""The learner's checkpoint directory is replaced whole (rl.persist.replace_dir), and a replacement cut
short between its two renames is taken back at the next start (recover_dir)."""
from __future__ import annotations

from pathlib import Path

from mechanic_rl_ros.rl.persist import recover_dir, replace_dir

MARKER = "node_state.json"


def _write(d: Path, version: str, complete: bool = True) -> Path:
    d.mkdir()
    (d / "weights.bin").write_text(version)
    if complete:
        (d / MARKER).write_text(version)
    return d


def test_replace_dir_swaps_the_new_directory_in(tmp_path):
    dest = tmp_path / "learner"
    replace_dir(_write(tmp_path / "learner.tmp", "v1"), dest)
    replace_dir(_write(tmp_path / "learner.tmp", "v2"), dest)
    assert (dest / "weights.bin").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["learner"]


def test_a_swap_cut_short_between_the_renames_is_recovered(tmp_path):
    dest = tmp_path / "learner"
    # killed after renaming the old checkpoint away, before renaming the new one in: the new one is complete
    _write(tmp_path / "learner.old", "v1")
    _write(tmp_path / "learner.tmp", "v2")
    recover_dir(dest, MARKER)
    assert (dest / "weights.bin").read_text() == "v2"


def test_an_unfinished_new_directory_falls_back_to_the_old_one(tmp_path):
    dest = tmp_path / "learner"
    _write(tmp_path / "learner.old", "v1")
    _write(tmp_path / "learner.tmp", "v2", complete=False)
    recover_dir(dest, MARKER)
    assert (dest / "weights.bin").read_text() == "v1"


def test_an_existing_directory_is_left_alone(tmp_path):
    dest = _write(tmp_path / "learner", "v3")
    _write(tmp_path / "learner.tmp", "v4")
    recover_dir(dest, MARKER)
    assert (dest / "weights.bin").read_text() == "v3"
