"""``DetectionCollections`` against the real Milvus server: scalar indexes of old collections."""

from __future__ import annotations

import logging

from pymilvus import MilvusClient

from pedsearch.attributes import AttributeSchema
from pedsearch.schema import DetectionCollections


def test_old_collection_gets_the_scalar_indexes_when_next_loaded(settings, caplog):
    client = MilvusClient(uri=settings.milvus.uri)
    schema = AttributeSchema.default()
    try:
        # a collection made before milvus.scalar_indexes listed any field
        settings.milvus.scalar_indexes = []
        cols = DetectionCollections(client, settings.milvus)
        name = cols.ensure("v1", embed_dim=8, attributes=schema)
        assert set(cols.indexes(name)) == {"embedding"}

        # while it is loaded (queries running) it is left as it is, and the log says why
        settings.milvus.scalar_indexes = ["camera_id", "ts_us"]
        with caplog.at_level(logging.WARNING, logger="pedsearch"):
            assert cols.ensure("v1", embed_dim=8, attributes=schema) == name
        assert set(cols.indexes(name)) == {"embedding"}
        assert any("no index on camera_id, ts_us" in r.getMessage() for r in caplog.records)

        # the next load (here after a release; after a Milvus restart alike) adds them first
        client.release_collection(name)
        cols.ensure("v1", embed_dim=8, attributes=schema)
        infos = cols.indexes(name)
        assert infos["camera_id"]["index_type"] == "Trie"
        assert infos["ts_us"]["index_type"] == "STL_SORT"
        assert str(client.get_load_state(name)["state"]).endswith("Loaded")
        assert client.search(name, data=[[0.1] * 8], anns_field="embedding", limit=1,
                             filter='camera_id == "cam-1" and ts_us > 0') == [[]]
    finally:
        client.drop_alias(settings.milvus.alias)
        for name in client.list_collections():
            if name.startswith(settings.milvus.collection_prefix):
                client.drop_collection(name)
        client.close()
