"""What ``pedsearch rollout`` says when it is done (the summary's wording, from a report)."""

from __future__ import annotations

import argparse
import io

from rich.console import Console

from deploy.rollout import CopyStats, RolloutReport, _summary
from pedsearch.config import Settings


def summary(report: RolloutReport, **flags) -> str:
    out = io.StringIO()
    args = argparse.Namespace(copy=True, **flags)
    _summary(report, args, Settings(), Console(file=out, width=400))
    return " ".join(out.getvalue().split())


def test_no_switch_without_an_alias_says_none_was_created():
    report = RolloutReport(previous=None, collection="detections_v2", version="v2",
                           stats=CopyStats(), switched=False)
    text = summary(report)
    assert "None" not in text
    assert "not created (no collection had it) (--no-switch)" in text
    assert "pedsearch rollout --bundle <this bundle>" in text


def test_no_switch_names_the_collection_the_alias_stays_on():
    report = RolloutReport(previous="detections_v1", collection="detections_v2", version="v2",
                           stats=CopyStats(copied=3), switched=False)
    text = summary(report)
    assert "left on detections_v1 (--no-switch)" in text
    assert "3 detections copied from detections_v1" in text
