"""The bundles a gateway holds beside ``model.bundle`` (``gateway.bundles``) are checked when it
starts: the operator asked for them for a roll-out, which a missing one would break later."""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest

from gateway.server import BUNDLE_PARTS, load_extra_bundles
from pedsearch.bundle import default_bundle_path, load_bundle
from pedsearch.config import Settings
from pedsearch.errors import ConfigError


@pytest.fixture(scope="module")
def primary():
    return load_bundle(default_bundle_path(), parts=BUNDLE_PARTS)


def _as_version(tmp_path: pathlib.Path, version: str) -> pathlib.Path:
    dst = tmp_path / version
    shutil.copytree(default_bundle_path(), dst)
    manifest = json.loads((dst / "bundle.json").read_text())
    (dst / "bundle.json").write_text(json.dumps({**manifest, "version": version}))
    return dst


def test_other_versions_are_loaded_in_order(primary, tmp_path):
    paths = [_as_version(tmp_path, "vB"), _as_version(tmp_path, "vC")]
    extra = load_extra_bundles(Settings(gateway={"bundles": paths}), primary)
    assert [b.version for b in extra] == ["vB", "vC"]
    assert all(set(BUNDLE_PARTS) <= set(b.parts) for b in extra)


def test_a_missing_bundle_or_a_version_twice_is_a_config_error(primary, tmp_path):
    with pytest.raises(ConfigError, match=r"gateway.bundles: cannot load .*nowhere"):
        load_extra_bundles(Settings(gateway={"bundles": [tmp_path / "nowhere"]}), primary)
    with pytest.raises(ConfigError, match=f"holds model version {primary.version}, which the "
                                          "gateway holds already"):
        load_extra_bundles(Settings(gateway={"bundles": [default_bundle_path()]}), primary)
    assert load_extra_bundles(Settings(), primary) == []


def test_serve_with_a_bundle_that_does_not_load_stops_with_its_reason(tmp_path, capsys):
    """`gateway serve --bundle /typo` came up NOT_SERVING and answered FAILED_PRECONDITION to
    every query; the bundle was asked for by name, so it is an error to fix at once."""
    from pedsearch.cli import main

    code = main(["gateway", "serve", "--address", "127.0.0.1:0", "--bundle",
                 str(tmp_path / "typo")])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert f"--bundle {tmp_path / 'typo'}: no model bundle at" in err
