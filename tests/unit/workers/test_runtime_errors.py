"""A consumer actor whose constructor failed: its pedsearch error, not a Ray traceback."""

from __future__ import annotations

import pytest
from ray.exceptions import RayActorError

from pedsearch.errors import PedsearchError, Unavailable
from workers.runtime import init_failure

TRACE = """The actor died because of an error raised in its creation task,
ray::ConsumerWorker.__init__()
  File "workers/runtime.py", line 89, in __init__
    self.loop = build_consumer(settings, worker_id, embed)
  File "pedsearch/schema.py", line 122, in connect
    raise Unavailable(
pedsearch.errors.Unavailable: cannot reach Milvus at http://127.0.0.1:2; start the local stack
"""


def test_the_constructors_pedsearch_error_comes_back_as_itself():
    err = init_failure(RayActorError(error_msg=TRACE, actor_init_failed=True))
    assert type(err) is Unavailable
    assert err.message == "cannot reach Milvus at http://127.0.0.1:2; start the local stack"


def test_any_other_error_keeps_its_last_line():
    err = init_failure(RayActorError(error_msg="boom\n  File x\nKeyError: 'bundle'\n",
                                     actor_init_failed=True))
    assert type(err) is PedsearchError and err.message.endswith("KeyError: 'bundle'")


def test_use_gpu_on_a_local_ray_without_a_gpu_is_refused(monkeypatch):
    """The embedder actors would wait for a GPU for ever and ingest would stall silently."""
    import ray

    from pedsearch.config import Settings
    from pedsearch.errors import ConfigError
    from workers.runtime import _use_gpu

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    settings = Settings()
    assert _use_gpu(settings) is False  # unset: a GPU when there is one
    settings.workers.use_gpu = True
    with pytest.raises(ConfigError, match="use_gpu is true but this machine's Ray has no GPU"):
        _use_gpu(settings)
    settings.ray.address = "ray://head:10001"  # a cluster may gain a GPU node
    assert _use_gpu(settings) is True
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": 1.0})
    settings.ray.address = None
    assert _use_gpu(settings) is True
