"""Preview pictures and the ``synth`` / ``synth-preview`` commands."""

from __future__ import annotations

import argparse
import json
import pathlib

import cv2
import pytest

from pedsearch.errors import InvalidInput
from pedsearch.synthetic.cli import register
from pedsearch.synthetic.preview import write_preview


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pedsearch")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_write_preview(tmp_path: pathlib.Path) -> None:
    crops, scene = write_preview(tmp_path, seed=2, num_crops=3, scene_seconds=2.0)
    assert cv2.imread(str(crops)) is not None
    img = cv2.imread(str(scene))
    assert img.shape == (720, 1280, 3)
    with pytest.raises(InvalidInput):
        write_preview(tmp_path, num_crops=0)


def test_synth_command_writes_a_dataset(tmp_path: pathlib.Path) -> None:
    args = _parse(["synth", "--out", str(tmp_path / "ds"), "--ids", "3", "--images-per-id", "2",
                   "--height", "64", "--splits", "0.34", "0.33", "0.33"])
    assert args.handler(args) == 0
    entries = json.loads((tmp_path / "ds" / "reid_raw.json").read_text())
    assert len(entries) == 6 and {e["split"] for e in entries} == {"train", "val", "test"}


def test_synth_command_rejects_bad_numbers() -> None:
    with pytest.raises(SystemExit):
        _parse(["synth", "--out", "x", "--ids", "0"])
