"""The README's cluster configuration is a valid configuration file."""

from __future__ import annotations

import os
import pathlib
import re

from pedsearch.config import load_settings

README = pathlib.Path(__file__).resolve().parents[3] / "README.md"


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_cluster_configuration_loads(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("PEDSEARCH_")]:
        monkeypatch.delenv(key)
    yaml_block = re.search(r"```yaml\n(.*?)```", section("Point it at a real cluster"), re.S)
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml_block.group(1))
    s = load_settings(config)
    assert s.kafka.bootstrap_servers == "kafka-0.kafka:9092,kafka-1.kafka:9092"
    assert s.milvus.uri == "http://milvus.search.svc:19530" and s.milvus.token == "root:Milvus"
    assert s.redis.url.startswith("redis://redis.search.svc")
    assert s.ray.address == "ray://ray-head.search.svc:10001"
    assert s.gateway.tokens["dashboard-token"] == ["ListCameras", "GetDetection"]
    assert s.gateway.tls_cert == pathlib.Path("/etc/pedsearch/tls.crt")
