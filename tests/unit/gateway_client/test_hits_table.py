"""What `pedsearch search` prints for a result: one row per hit, best first."""

from __future__ import annotations

from rich.console import Console

from gateway.client import Detection, Hit, SearchResult
from gateway.client_cli import format_ts, hits_table


def _det(i: int, **attrs: float) -> Detection:
    return Detection(id=1000 + i, camera_id=f"gate-{i}", ts_us=1_800_000_000_000_000 + i,
                     track_id=7 * i, box=(1.0, 2.0, 30.0, 80.0), det_score=0.9, crop_ref="r",
                     model_version="v1", frame_seq=i, attributes=attrs)


def test_top_attributes_are_the_most_probable_above_one_half():
    d = _det(1, **{"gender=female": 0.9, "backpack=yes": 0.7, "hat=yes": 0.2,
                   "upper_color=red": 0.8, "bag=no": 0.6})
    assert d.top_attributes(3) == [("gender=female", 0.9), ("upper_color=red", 0.8),
                                   ("backpack=yes", 0.7)]
    assert _det(2, **{"hat=yes": 0.4}).top_attributes() == []


def test_table_rows():
    result = SearchResult(hits=[Hit(0.812, _det(1, **{"gender=male": 0.95})),
                                Hit(0.5, _det(2))],
                          model_version="v1", collection="detections_v1", encode_ms=3.0,
                          search_ms=4.0)
    console = Console(record=True, width=200)
    console.print(hits_table(result, title="a man [in] grey"))
    text = console.export_text()
    assert "a man [in] grey" in text and "2 hits, model v1" in text
    lines = [x for x in text.splitlines() if "gate-" in x]
    assert len(lines) == 2
    cells = [c.strip() for c in lines[0].strip("│ ").split("│")]
    assert cells == ["1", "0.812", "gate-1", "2027-01-15 08:00:00", "7", "gender=male 0.95",
                     "1001"]
    assert format_ts(1_800_000_000_000_001) == "2027-01-15 08:00:00.000"
    # narrow: no attributes, and the id whole (it is what GetDetection takes), even beside a
    # long camera id: that one folds
    import dataclasses

    long = dataclasses.replace(_det(1), id=8743659052870779247, camera_id="entrance-north-01")
    narrow = SearchResult(hits=[Hit(0.812, long)], model_version="v1",
                          collection="detections_v1", encode_ms=3.0, search_ms=4.0)
    for width, attributes in ((80, False), (110, True)):
        console = Console(record=True, width=width)
        console.print(hits_table(narrow, title="a man", attributes=attributes))
        text = console.export_text()
        assert "8743659052870779247" in text and "…" not in text, text


def test_a_watch_prints_a_line_per_track_and_better_views_only():
    from gateway.client_cli import TrackLog

    log = TrackLog()
    a1, a2, b1 = _det(1), _det(1), _det(2)  # tracks 7 on gate-1 (twice) and 14 on gate-2
    first = log.add(Hit(0.70, a1))
    assert first.startswith("[green]match 1[/] score 0.700  gate-1") and "track 7" in first
    assert log.add(Hit(0.65, a2)) is None           # the same person still in view: counted
    assert "better view[/] score 0.750" in log.add(Hit(0.75, a2))
    assert log.add(Hit(0.60, b1)).startswith("[green]match 2[/] score 0.600  gate-2")
    assert log.windows == {("gate-1", 7): 3, ("gate-2", 14): 1}
    assert log.summary() == " in 2 track(s)" and TrackLog().summary() == ""
