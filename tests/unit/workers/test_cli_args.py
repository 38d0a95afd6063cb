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
