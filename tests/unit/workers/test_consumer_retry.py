"""How the ingest supervisor answers a consumer whose run raised (pure logic of
``IngestWorkers._after_failure``; a real Redis outage is in tests/integration/test_ingest.py)."""

from __future__ import annotations

import pytest

from pedsearch.config import Settings
from pedsearch.errors import ConfigError, Unavailable
from workers.runtime import RETRY_MAX_DELAY_S, IngestWorkers


def supervisor(retry_limit: int = 20) -> IngestWorkers:
    workers = IngestWorkers.__new__(IngestWorkers)  # no Ray: only the retry rule is tested
    workers.settings = Settings()
    workers.settings.workers.retry_limit = retry_limit
    workers.restarts = 0
    return workers


def test_service_errors_back_off_doubling_up_to_the_cap():
    import redis

    w = supervisor()
    delays = [w._after_failure(0, redis.ConnectionError("refused"), n)
              for n in range(1, 9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, RETRY_MAX_DELAY_S, RETRY_MAX_DELAY_S,
                      RETRY_MAX_DELAY_S]
    assert w.restarts == 8
    assert w._after_failure(0, Unavailable("Milvus refused 64 rows"), 1) == 1.0


def test_too_many_failures_in_a_row_give_up_with_the_last_error():
    w = supervisor(retry_limit=3)
    with pytest.raises(Unavailable) as err:
        w._after_failure(1, OSError("No space left on device"), 4)
    msg = err.value.message
    assert "consumer-1 failed 4 times in a row" in msg and "No space left on device" in msg
    assert "resume from their last checkpoint" in msg


def test_retry_limit_zero_gives_up_at_the_first_error():
    with pytest.raises(Unavailable, match="retry_limit = 0"):
        supervisor(retry_limit=0)._after_failure(0, OSError("gone"), 1)


def test_a_configuration_error_is_not_retried():
    w = supervisor()
    with pytest.raises(ConfigError, match="consumer-0 stopped: collection dim 512"):
        w._after_failure(0, ConfigError("collection dim 512 is not the bundle's 1024"), 1)
    assert w.restarts == 0


def test_a_configuration_error_wrapped_by_kafka_is_not_retried():
    from kafka.errors import KafkaError

    try:
        try:
            raise ConfigError("camera gate-3: no detector weights at /models/x.weights")
        except ConfigError as inner:
            raise KafkaError("User rebalance callback throws an error") from inner
    except KafkaError as outer:
        wrapped = outer
    with pytest.raises(ConfigError, match="consumer-2 stopped: camera gate-3"):
        supervisor()._after_failure(2, wrapped, 1)
