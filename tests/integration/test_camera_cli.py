"""``pedsearch camera`` publishing to the real Kafka-API broker."""

from __future__ import annotations

import subprocess
import sys

import pytest
from kafka import KafkaConsumer

pytestmark = pytest.mark.integration


def test_a_synthetic_scene_stops_after_frames(settings):
    # settings put the broker and a topic of this test's own in the environment
    proc = subprocess.run(
        [sys.executable, "-m", "pedsearch.cli", "camera", "--source", "synthetic",
         "--camera-id", "cli", "--frames", "7", "--as-fast-as-possible", "--cameras", "2",
         "--people", "3", "--duration", "30"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "published 7/7 frames" in " ".join(proc.stdout.split())
    consumer = KafkaConsumer(settings.kafka.frames_topic,
                             bootstrap_servers=settings.kafka.bootstrap_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        keys = [m.key for m in consumer]
    finally:
        consumer.close()
    assert len(keys) == 7  # 30 s of 2 cameras at 5 fps would be 300
    assert {k.decode() for k in keys} <= {"cli-0", "cli-1"}
