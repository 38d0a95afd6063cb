"""Argument parsing of `pedsearch workers`: the embedder count may be 0 (in-process), not less."""

from __future__ import annotations

import argparse

import pytest

from pedsearch.config import WorkersConfig
from workers.cli import register


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pedsearch")
    register(ap.add_subparsers(dest="command"))
    return ap


def test_zero_embedders_means_in_process_and_is_accepted() -> None:
    args = parser().parse_args(["workers", "--embedders", "0", "--consumers", "2"])
    assert args.embedders == 0 and args.consumers == 2
    assert WorkersConfig(embedders=0).embedders == 0


def test_negative_embedders_and_zero_consumers_are_refused(capsys) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["workers", "--embedders", "-1"])
    assert "must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser().parse_args(["workers", "--consumers", "0"])
    assert "must be > 0" in capsys.readouterr().err


def test_jpeg_quality_names_its_range_not_every_value(capsys) -> None:
    argv = ["camera", "--source", "synthetic", "--camera-id", "a", "--jpeg-quality"]
    assert parser().parse_args(argv + ["30"]).jpeg_quality == 30
    with pytest.raises(SystemExit):
        parser().parse_args(argv + ["5"])
    err = capsys.readouterr().err
    assert "--jpeg-quality: must be 30..100, got 5" in err and "31, 32" not in err


@pytest.mark.parametrize("extra, message", [
    (["--cameras", "100"], "--cameras: input should be less than or equal to 64"),
    (["--fps", "100"], "--fps: input should be less than or equal to 60"),
    (["--duration", "1e6"], "--duration: input should be less than or equal to 86400"),
    (["--seed", "-1"], "--seed: input should be greater than or equal to 0"),
    (["--camera-id", "c" * 63], "--camera-id is too long for 4 cameras"),
])
def test_synthetic_scene_flags_out_of_the_scenes_bounds_name_the_flag(extra, message) -> None:
    """Checked before the producer connects: `pedsearch camera` used to end in a traceback."""
    from pedsearch.errors import InvalidInput
    from workers.cli import check_scene_flags

    args = parser().parse_args(["camera", "--source", "synthetic", "--camera-id", "gate",
                                *extra])
    with pytest.raises(InvalidInput, match=message):
        check_scene_flags(args)
    check_scene_flags(parser().parse_args(["camera", "--source", "synthetic",
                                           "--camera-id", "gate"]))  # the defaults are fine
