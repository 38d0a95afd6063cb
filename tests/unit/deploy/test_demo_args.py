"""`pedsearch demo` arguments checked before anything starts."""

from __future__ import annotations


def test_a_data_dir_holding_an_earlier_stack_is_refused(tmp_path, capsys):
    """An earlier scene's detections there were scored against this scene's ground truth."""
    from pedsearch.cli import main

    (tmp_path / "stack" / "milvus").mkdir(parents=True)
    code = main(["demo", "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "stack")])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"--data-dir {tmp_path / 'stack'} holds an earlier stack's data" in err
    assert not (tmp_path / "out").exists()  # refused before anything was made
