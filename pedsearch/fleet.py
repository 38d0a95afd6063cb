"""Which model versions the gateways of one deployment hold, kept in Redis.

A roll-out must not move the Milvus alias to a version some running gateway cannot answer
with: that gateway would fail every query until restarted. Two records make the switch safe
without restarting anything:

- **Staged bundles** (``pedsearch:<alias>:bundles``, a hash version -> bundle folder):
  ``pedsearch rollout`` stages the new bundle there before it copies anything. Every gateway
  reads the hash every few seconds and loads what it lacks (the folder must be readable where
  the gateway runs: the same path on a shared volume).
- **Gateway reports** (``pedsearch:<alias>:gateway:<id>``, JSON with a TTL): every gateway
  says which versions it holds and why a staged one failed to load. A gateway that dies
  disappears with its key's TTL. ``pedsearch rollout`` waits until every reporting gateway
  holds the new version before it switches the alias.

Example:
    >>> fleet = Fleet(redis.Redis.from_url(url), "detections")       # doctest: +SKIP
    >>> fleet.stage("v20261206_1503_e53f65", "/models/new")
    >>> [g.address for g in lacking(fleet.gateways(), "v20261206_1503_e53f65")]
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

#: a gateway reports every few seconds; its report lives this long without a refresh
REPORT_TTL_S = 15


def staged_key(alias: str) -> str:
    return f"pedsearch:{alias}:bundles"


def report_key(alias: str, gateway_id: str) -> str:
    return f"pedsearch:{alias}:gateway:{gateway_id}"


@dataclass
class GatewayReport:
    """What one gateway holds.

    Attributes:
        gateway_id: unique per running gateway (host, port and process).
        address: ``host:port`` it serves on.
        versions: the model versions it holds, its primary first.
        errors: version -> why a staged bundle could not be loaded.
        aliased: the collection behind the alias as the gateway last saw it ("" if none yet,
            or Milvus did not answer).
        serving: its health: SERVING (True) or NOT_SERVING.
    """

    gateway_id: str
    address: str
    versions: list[str]
    errors: dict[str, str] = field(default_factory=dict)
    aliased: str = ""
    serving: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str) -> "GatewayReport | None":
        """The report, or ``None`` when ``raw`` is not one (a foreign or damaged key)."""
        try:
            data = json.loads(raw)
            report = cls(gateway_id=str(data["gateway_id"]), address=str(data["address"]),
                         versions=[str(v) for v in data["versions"]],
                         errors={str(k): str(v) for k, v in data.get("errors", {}).items()},
                         aliased=str(data.get("aliased", "")),
                         serving=bool(data.get("serving", False)))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return report

    def describe(self, version: str) -> str:
        """One line for an operator: where the gateway is and why it lacks ``version``."""
        why = self.errors.get(version)
        return (f"gateway {self.address} ({self.gateway_id}) holds "
                f"{', '.join(self.versions) or 'no version'}"
                + (f"; loading {version} failed: {why}" if why else f"; {version} not loaded yet"))


def lacking(reports: list[GatewayReport], version: str) -> list[GatewayReport]:
    """The gateways that do not hold ``version``."""
    return [r for r in reports if version not in r.versions]


class Fleet:
    """The staged bundles and the gateways' reports of one alias, in Redis.

    Args:
        client: a ``redis.Redis`` client; its errors (``redis.RedisError``) pass through.
        alias: the Milvus alias the deployment's queries go through (``milvus.alias``).
    """

    def __init__(self, client, alias: str) -> None:
        self.redis = client
        self.alias = alias

    # -- staged bundles (written by the roll-out, read by the gateways) --------------------------
    def stage(self, version: str, path: str) -> None:
        """Ask every gateway to hold ``version``, loaded from the bundle folder ``path``."""
        self.redis.hset(staged_key(self.alias), version, path)

    def staged(self) -> dict[str, str]:
        """version -> bundle folder of every staged bundle."""
        raw = self.redis.hgetall(staged_key(self.alias))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def unstage(self, version: str) -> bool:
        """Take ``version`` off the staged bundles; whether it was staged."""
        return bool(self.redis.hdel(staged_key(self.alias), version))

    def keep_staged(self, versions: set[str]) -> list[str]:
        """Unstage every version not in ``versions`` (gateways then drop them unless the alias
        points there or they were started with them); returns those unstaged."""
        gone = [v for v in self.staged() if v not in versions]
        if gone:
            self.redis.hdel(staged_key(self.alias), *gone)
        return gone

    # -- gateway reports (written by each gateway, read by the roll-out) -------------------------
    def report(self, report: GatewayReport, ttl_s: int = REPORT_TTL_S) -> None:
        self.redis.set(report_key(self.alias, report.gateway_id), report.to_json(), ex=ttl_s)

    def withdraw(self, gateway_id: str) -> None:
        """A gateway that stops removes its report at once (not after the TTL)."""
        self.redis.delete(report_key(self.alias, gateway_id))

    def gateways(self) -> list[GatewayReport]:
        """The reports of every gateway alive now, by id."""
        keys = sorted(self.redis.scan_iter(match=report_key(self.alias, "*"), count=100))
        if not keys:
            return []
        reports = (GatewayReport.from_json(raw) for raw in self.redis.mget(keys) if raw)
        return [r for r in reports if r is not None]
