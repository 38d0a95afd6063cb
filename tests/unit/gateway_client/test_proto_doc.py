"""docs/API.md is generated from the .proto files and must match them."""

from __future__ import annotations

from gateway.proto_doc import OUT, PROTO_DIR, PROTO_FILES, generate, parse
from pedsearch.v1 import frame_pb2, search_pb2

DESCRIPTORS = {"search.proto": search_pb2.DESCRIPTOR, "frame.proto": frame_pb2.DESCRIPTOR}


def test_committed_api_doc_is_up_to_date():
    assert OUT.read_text(encoding="utf-8") == generate(), (
        "docs/API.md is out of date: run `python -m gateway.proto_doc`")


def test_parser_sees_everything_the_compiler_sees():
    for name in PROTO_FILES:
        parsed = parse(PROTO_DIR / name)
        fd = DESCRIPTORS[name]
        # messages (map entries are synthetic and not written in the .proto)
        assert [m.name for m in parsed.messages] == list(fd.message_types_by_name)
        for msg in parsed.messages:
            desc = fd.message_types_by_name[msg.name]
            assert [(f.name, f.number) for f in msg.fields] == [
                (f.name, f.number) for f in desc.fields]
            for f in msg.fields:
                d = desc.fields_by_name[f.name]
                if f.label == "map":
                    assert d.message_type.GetOptions().map_entry
                elif f.label == "repeated":
                    assert d.is_repeated
                elif f.label == "optional":
                    assert d.has_presence and d.containing_oneof is not None
                elif f.label.startswith("oneof "):
                    assert d.containing_oneof.name == f.label.split()[1]
            assert [e.name for e in msg.enums] == [e.name for e in desc.enum_types]
            for e in msg.enums:
                assert [(v.name, v.number) for v in e.values] == [
                    (v.name, v.number) for v in desc.enum_types_by_name[e.name].values]
        assert [s.name for s in parsed.services] == list(fd.services_by_name)
        for svc in parsed.services:
            desc = fd.services_by_name[svc.name]
            assert [(r.name, r.request, r.response, r.server_streaming) for r in svc.rpcs] == [
                (m.name, m.input_type.name, m.output_type.name, m.server_streaming)
                for m in desc.methods]


def test_every_rpc_and_field_comment_reaches_the_doc():
    doc = generate()
    parsed = parse(PROTO_DIR / "search.proto")
    for rpc in parsed.services[0].rpcs:
        assert f"| `{rpc.name}` |" in doc and rpc.comment and rpc.comment in doc
    assert "INVALID_ARGUMENT    the request is malformed" in doc
    assert "| `since_us` | 2 | `int64` | optional | capture time >= since_us" in doc
