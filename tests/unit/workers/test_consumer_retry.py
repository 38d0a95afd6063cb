"""How the ingest supervisor answers a consumer stopped by an error (pure logic of
``IngestWorkers._after_failure``; the real outage is in tests/integration/test_ingest.py)."""

from __future__ import annotations

import pytest

from pedsearch.config import Settings
from pedsearch.errors import ConfigError, PedsearchError, Unavailable
from workers.runtime import RETRY_MAX_DELAY_S, IngestWorkers


class Failed(Exception):
    """What ``ray.get`` raises for a task that raised: the task's exception is ``cause``."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def supervisor(retry_limit: int = 20) -> IngestWorkers:
    workers = IngestWorkers.__new__(IngestWorkers)  # no Ray: only the retry rule is tested
    workers.settings = Settings()
    workers.settings.workers.retry_limit = retry_limit
    workers.restarts = 0
    return workers


def test_service_errors_back_off_doubling_up_to_the_cap():
    import redis

    w = supervisor()
    delays = [w._after_failure(0, Failed(redis.ConnectionError("refused")), n)
              for n in range(1, 9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, RETRY_MAX_DELAY_S, RETRY_MAX_DELAY_S,
                      RETRY_MAX_DELAY_S]
    assert w.restarts == 8
    assert w._after_failure(0, Failed(Unavailable("Milvus refused 64 rows")), 1) == 1.0


def test_too_many_failures_in_a_row_give_up_with_the_last_error():
    w = supervisor(retry_limit=3)
    with pytest.raises(Unavailable) as err:
        w._after_failure(1, Failed(OSError("No space left on device")), 4)
    msg = err.value.message
    assert "consumer-1 failed 4 times in a row" in msg and "No space left on device" in msg
    assert "resume from their last checkpoint" in msg


def test_retry_limit_zero_gives_up_at_the_first_error():
    with pytest.raises(Unavailable, match="retry_limit = 0"):
        supervisor(retry_limit=0)._after_failure(0, Failed(OSError("gone")), 1)


def test_a_configuration_error_is_not_retried():
    w = supervisor()
    with pytest.raises(PedsearchError, match="consumer-0 stopped: collection dim 512") as err:
        w._after_failure(0, Failed(ConfigError("collection dim 512 is not the bundle's 1024")), 1)
    assert not isinstance(err.value, Unavailable) and w.restarts == 0
