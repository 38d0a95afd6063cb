"""The gateway's following of staged bundles (``gateway.bundles.BundleSync``) and the reports
it writes (``pedsearch.fleet``): pure logic, with an in-memory stand-in for the Redis records
(the real ones are exercised by the roll-out tests in tests/integration/test_gateway.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import redis

from gateway.bundles import RETRY_S, BundleSync
from gateway.service import MilvusLink
from pedsearch.config import Settings
from pedsearch.errors import NotFound, Unavailable
from pedsearch.fleet import GatewayReport, lacking
from pedsearch.schema import version_of_collection

SETTINGS = Settings(milvus={"collection_prefix": "det_"})


class MemoryFleet:
    """The two records of :class:`pedsearch.fleet.Fleet`, in memory."""

    def __init__(self) -> None:
        self.staged_bundles: dict[str, str] = {}
        self.reports: dict[str, GatewayReport] = {}
        self.down = False

    def staged(self):
        if self.down:
            raise redis.ConnectionError("Connection refused")
        return dict(self.staged_bundles)

    def report(self, report):
        self.reports[report.gateway_id] = report

    def withdraw(self, gateway_id):
        self.reports.pop(gateway_id, None)


def bundle(version: str):
    return SimpleNamespace(version=version, schema=None)


class Loader:
    """Loads ``/ok/<version>``; anything else is missing."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, path: str):
        self.calls.append(path)
        if not path.startswith("/ok/"):
            raise NotFound(f"no model bundle at {path}")
        return bundle(path.rsplit("/", 1)[1])


@pytest.fixture
def world():
    link = MilvusLink(SETTINGS, bundle("v1"), [bundle("v0")])
    fleet, load, now = MemoryFleet(), Loader(), [100.0]
    sync = BundleSync(link, fleet, address="10.0.0.7:50051", load=load, clock=lambda: now[0])
    return SimpleNamespace(link=link, fleet=fleet, load=load, sync=sync, now=now)


def held(world):
    return list(world.link.bundles)


def test_staged_bundles_are_loaded_and_reported(world):
    world.fleet.staged_bundles = {"v2": "/ok/v2"}
    world.sync.step("det_v1")
    assert held(world) == ["v1", "v0", "v2"]
    (report,) = world.fleet.reports.values()
    assert report.address == "10.0.0.7:50051" and report.versions == ["v1", "v0", "v2"]
    assert report.aliased == "det_v1"
    world.sync.step(None, alias_known=False)  # Milvus did not answer: the last one seen stays
    assert world.fleet.reports[world.sync.gateway_id].aliased == "det_v1"
    world.sync.step("det_v1")
    assert world.load.calls == ["/ok/v2"]  # held: not loaded again


def test_the_versions_held_are_a_metric(world):
    from prometheus_client import REGISTRY

    def metric(version):
        return REGISTRY.get_sample_value("pedsearch_gateway_model_versions",
                                         {"version": version})

    world.fleet.staged_bundles = {"v2": "/ok/v2"}
    world.sync.step("det_v1")
    assert (metric("v1"), metric("v0"), metric("v2")) == (1.0, 1.0, 1.0)
    world.fleet.staged_bundles = {}
    world.sync.step("det_v1")
    assert metric("v2") is None and metric("v1") == 1.0


def test_unstaged_bundles_are_dropped_unless_aliased_or_started_with(world):
    world.fleet.staged_bundles = {"v2": "/ok/v2", "v3": "/ok/v3"}
    world.sync.step("det_v1")
    world.fleet.staged_bundles = {}
    world.sync.step("det_v3")  # the alias is on v3: kept
    assert held(world) == ["v1", "v0", "v3"]
    world.sync.step("det_v3", alias_known=False)  # Milvus cannot say: nothing dropped
    world.sync.step(None, alias_known=False)
    assert held(world) == ["v1", "v0", "v3"]
    world.sync.step("det_v1")
    assert held(world) == ["v1", "v0"]  # v1 and v0 were given at start: never dropped


def test_a_failed_load_is_reported_and_retried_later_or_at_a_new_path(world):
    world.fleet.staged_bundles = {"v2": "/mnt/models/v2"}
    world.sync.step("det_v1")
    world.sync.step("det_v1")  # within the retry delay: not tried again
    assert world.load.calls == ["/mnt/models/v2"]
    (report,) = world.fleet.reports.values()
    assert report.versions == ["v1", "v0"]
    assert report.errors == {"v2": "no model bundle at /mnt/models/v2"}
    assert "loading v2 failed: no model bundle at /mnt/models/v2" in report.describe("v2")
    world.now[0] += RETRY_S + 1
    world.sync.step("det_v1")
    assert world.load.calls == ["/mnt/models/v2"] * 2  # after the delay: tried again
    world.fleet.staged_bundles = {"v2": "/ok/v2"}  # a new path: tried at once
    world.sync.step("det_v1")
    assert held(world)[-1] == "v2" and world.fleet.reports[world.sync.gateway_id].errors == {}


def test_a_bundle_of_another_version_than_staged_is_refused(world):
    world.fleet.staged_bundles = {"v2": "/ok/v9"}
    world.sync.step("det_v1")
    assert held(world) == ["v1", "v0"]
    assert world.fleet.reports[world.sync.gateway_id].errors == {
        "v2": "/ok/v9 holds model version v9, not v2"}


def test_redis_down_keeps_what_is_held(world):
    world.fleet.staged_bundles = {"v2": "/ok/v2"}
    world.sync.step("det_v1")
    world.fleet.down = True
    world.sync.step("det_v1")
    assert held(world) == ["v1", "v0", "v2"]
    world.sync.withdraw()
    assert world.fleet.reports == {}
    world.sync.step("det_v1")  # a monitor round after the withdrawal writes no report
    world.sync.publish()
    assert world.fleet.reports == {}


def test_the_primary_is_never_dropped_and_a_dropped_version_is_retryable():
    link = MilvusLink(SETTINGS, bundle("v1"), [bundle("v2")])
    with pytest.raises(ValueError):
        link.drop("v1")
    assert link.version_of("det_v1") == "v1" and link.version_of("det_v3") is None
    link.drop("v2")
    with pytest.raises(Unavailable, match="just dropped"):  # a request routed just before
        link.encoder("v2")
    assert version_of_collection(SETTINGS.milvus, "det_v2") == "v2"
    assert version_of_collection(SETTINGS.milvus, "other_v2") is None


def test_reports_round_trip_and_foreign_values_are_ignored():
    report = GatewayReport(gateway_id="h:1:2", address="h:1", versions=["v1", "v2"],
                           errors={"v3": "missing"}, aliased="det_v2", serving=True)
    assert GatewayReport.from_json(report.to_json()) == report
    # an older gateway's report, without the later fields
    assert GatewayReport.from_json(b'{"gateway_id": "x", "address": "a", "versions": []}') == \
        GatewayReport(gateway_id="x", address="a", versions=[])
    for raw in (b"{", b"[]", b'{"gateway_id": "x"}', b'{"gateway_id": "x", "address": "a", '
                b'"versions": 3}'):
        assert GatewayReport.from_json(raw) is None
    other = GatewayReport(gateway_id="h:3:4", address="h:3", versions=["v1"])
    assert lacking([report, other], "v2") == [other]
    assert other.describe("v2") == "gateway h:3 (h:3:4) holds v1; v2 not loaded yet"
