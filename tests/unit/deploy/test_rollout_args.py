"""``pedsearch rollout``'s arguments are checked before Redis or Milvus is reached."""

from __future__ import annotations

import pytest

from pedsearch.cli import main


@pytest.mark.parametrize("args, message", [
    ([], "one of the arguments --bundle --unstage is required"),
    (["--bundle", "b", "--unstage", "v1"], "not allowed with argument"),
    (["--unstage", "v1", "--force", "--no-copy"], "--force, --no-copy do not apply to --unstage"),
    (["--unstage", "v1", "--wait", "5"], "--wait does not apply to --unstage"),
    (["--bundle", "b", "--wait", "-1"], "argument --wait: must be 0..3600"),
])
def test_bad_rollout_arguments_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["rollout", *args])
    assert exc.value.code == 2
    assert message in " ".join(capsys.readouterr().err.split())
