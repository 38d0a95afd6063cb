"""Typed configuration: file, _base_ inheritance, environment overrides, strictness."""

import pytest

from pedsearch.config import load_settings
from pedsearch.errors import ConfigError


def test_defaults():
    s = load_settings(None)
    assert s.kafka.frames_topic == "frames"
    assert s.milvus.alias == "detections"


def test_file_base_and_env(tmp_path, monkeypatch):
    (tmp_path / "base.yaml").write_text(
        "kafka:\n  frames_topic: base-frames\n  consumer_group: g\n")
    (tmp_path / "site.yaml").write_text(
        "_base_: base.yaml\nkafka:\n  consumer_group: site\ncameras:\n"
        "  cam-1:\n    detector: {type: darknet, input_width: 640}\n"
    )
    monkeypatch.setenv("PEDSEARCH_KAFKA__BOOTSTRAP_SERVERS", "broker:9999")
    s = load_settings(tmp_path / "site.yaml")
    assert s.kafka.frames_topic == "base-frames"
    assert s.kafka.consumer_group == "site"
    assert s.kafka.bootstrap_servers == "broker:9999"
    assert s.camera("cam-1").detector.type == "darknet"
    assert s.camera("cam-1").detector.params() == {"input_width": 640}


def test_unknown_key_is_an_error(tmp_path):
    (tmp_path / "c.yaml").write_text("kafka:\n  frames_topik: x\n")
    with pytest.raises(ConfigError, match="frames_topik"):
        load_settings(tmp_path / "c.yaml")


def test_out_of_bounds(tmp_path):
    (tmp_path / "c.yaml").write_text("kafka:\n  max_poll_records: 0\n")
    with pytest.raises(ConfigError, match="max_poll_records"):
        load_settings(tmp_path / "c.yaml")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("kafka: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(tmp_path / "list.yaml")


def test_scalar_indexes_and_idle_close(tmp_path):
    s = load_settings(None)
    assert s.milvus.scalar_indexes == ["camera_id", "ts_us"]
    assert s.tracking.idle_close_s == 15.0
    (tmp_path / "c.yaml").write_text("milvus:\n  scalar_indexes: [embedding]\n")
    with pytest.raises(ConfigError, match="scalar_indexes"):
        load_settings(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text("tracking:\n  idle_close_s: -1\n")
    with pytest.raises(ConfigError, match="idle_close_s"):
        load_settings(tmp_path / "c.yaml")


def test_environment_variables_that_name_no_setting_are_reported():
    from pedsearch.config import unknown_environment

    environ = {
        "PEDSEARCH_MILVIS__URI": "http://m:19530",  # a typo of the section: ignored, so reported
        "PEDSEARCH_MILVUS__URI": "http://m:19530", "PEDSEARCH_CAMERAS": "{}",
        "PEDSEARCH_WORKERS__DEFAULT_DETECTOR__TYPE": "hog", "PEDSEARCH_TRAIN__EPOCHS": "3",
        "PEDSEARCH_TOKEN": "t", "PEDSEARCH_TEST_MILVUS": "x", "HOME": "/root",
    }
    problems = unknown_environment(environ)
    assert len(problems) == 1
    assert "PEDSEARCH_MILVIS__URI" in problems[0] and "'milvis'" in problems[0]


def test_an_unknown_field_in_the_environment_is_an_error(monkeypatch):
    monkeypatch.setenv("PEDSEARCH_MILVUS__URL", "http://m:19530")  # a typo of URI
    with pytest.raises(ConfigError, match="milvus.url"):
        load_settings()


def test_a_camera_id_with_a_trailing_newline_is_refused(tmp_path):
    # a quoted YAML key keeps its escaped newline; "$" would have let it through
    (tmp_path / "c.yaml").write_text('cameras:\n  "gate-3\\n": {}\n')
    with pytest.raises(ConfigError, match="camera ids"):
        load_settings(tmp_path / "c.yaml")


def test_the_dead_letter_topic_must_not_be_the_frames_topic(tmp_path):
    # the workers would consume their own dead letters, for ever
    (tmp_path / "c.yaml").write_text("kafka:\n  frames_topic: cams\n  dlq_topic: cams\n")
    with pytest.raises(ConfigError, match="dlq_topic must differ from kafka.frames_topic"):
        load_settings(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="dlq_topic"):
        load_settings(kafka={"dlq_topic": "frames"})
    s = load_settings(kafka={"frames_topic": "cams", "dlq_topic": "cams.dlq"})
    assert (s.kafka.frames_topic, s.kafka.dlq_topic) == ("cams", "cams.dlq")


@pytest.mark.parametrize("kafka, message", [
    ({"dlq_topic": "frames dlq"}, "dlq_topic\n  String should match pattern"),
    ({"frames_topic": "cams/1"}, "frames_topic\n  String should match pattern"),
    ({"dlq_topic": "x" * 250}, "at most 249 characters"),
    ({"dlq_topic": ".."}, "kafka.dlq_topic cannot be '..'"),
    # kafka-python refuses a heartbeat (a third of it, at least 1 s) that is not shorter
    ({"session_timeout_ms": 1000}, "greater than or equal to 3000"),
])
def test_kafka_settings_the_client_or_the_broker_would_refuse_are_refused_at_load(kafka,
                                                                                  message):
    """Found at start-up, not when the first poison message meets the dead-letter producer."""
    with pytest.raises(ConfigError, match=message):
        load_settings(kafka=kafka)


def test_a_token_granting_a_method_the_service_lacks_is_refused_without_showing_the_token(
        tmp_path, monkeypatch):
    """A misspelt method name showed only as PERMISSION_DENIED when a client called it; and a
    validation error of gateway.tokens printed the tokens (secrets) back."""
    (tmp_path / "c.yaml").write_text("gateway:\n  tokens:\n    s3cret-1: [Searchtext]\n")
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path / "c.yaml")
    assert "token 1 lists 'Searchtext', not a method of the Search service" in err.value.message
    assert "s3cret-1" not in err.value.message and "s3cret" not in str(err.value.__cause__)
    # a long token was quoted shortened ('b00be8a6a5b9...68025a2b70d'): no input is quoted
    long = "b00be8a6a5b965abb70294a1c3e5f7a9d0e2f4b6c8d0e2f468025a2b70d"
    with pytest.raises(ConfigError) as err:
        load_settings(gateway={"tokens": {long: ["Serch"], "x": ["SearchText", 5]}})
    assert "b00be8" not in err.value.message and "68025a2b70d" not in err.value.message
    assert "gateway.tokens.<token>.1" in err.value.message
    monkeypatch.setenv("PEDSEARCH_GATEWAY__TOKENS", '{"s3cret-2": "SearchText"}')
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "gateway.tokens.<token>" in err.value.message and "s3cret-2" not in err.value.message
    monkeypatch.delenv("PEDSEARCH_GATEWAY__TOKENS")
    ok = load_settings(gateway={"tokens": {"s3cret-3": ["SearchText", "Watch"], "ops": ["*"]}})
    assert ok.gateway.tokens["ops"] == ["*"]
