"""Generate ``docs/API.md`` from the service's ``.proto`` files, their comments included.

The proto files are the contract; the API document is derived from them, never retyped::

    python -m gateway.proto_doc              # rewrite docs/API.md
    python -m gateway.proto_doc --check      # exit 1 if docs/API.md is out of date

The compiled descriptors (``pedsearch.v1.*_pb2``) do not keep comments, and ``grpc_tools`` is
only a build requirement, so this reads the ``.proto`` text itself. It understands the subset
the project uses (services and rpcs, messages with nested enums, ``oneof``, ``repeated``,
``optional`` and ``map<,>`` fields, enums). A comment belongs to a declaration when it is on the
lines right above it or at the end of its line. A unit test checks every message, field, enum
and rpc found here against the compiled descriptors, so nothing is silently skipped.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
from dataclasses import dataclass, field

from pedsearch.markdown import cell, table

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto" / "pedsearch" / "v1"
#: the files documented, in order: the service first, then the records it returns
PROTO_FILES = ("search.proto", "frame.proto")
OUT = ROOT / "docs" / "API.md"


@dataclass
class Field:
    name: str
    number: int
    type: str
    label: str = ""  # repeated | optional | map | "" ; "oneof <name>" inside a oneof
    comment: str = ""


@dataclass
class EnumValue:
    name: str
    number: int
    comment: str = ""


@dataclass
class Enum:
    name: str
    comment: str = ""
    values: list[EnumValue] = field(default_factory=list)


@dataclass
class Message:
    name: str
    comment: str = ""
    fields: list[Field] = field(default_factory=list)
    enums: list[Enum] = field(default_factory=list)


@dataclass
class Rpc:
    name: str
    request: str
    response: str
    server_streaming: bool
    comment: str = ""


@dataclass
class Service:
    name: str
    comment: str = ""
    rpcs: list[Rpc] = field(default_factory=list)


@dataclass
class ProtoFile:
    path: str
    package: str = ""
    comment: str = ""  # the file's header comment
    services: list[Service] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    enums: list[Enum] = field(default_factory=list)


_FIELD = re.compile(r"^(?:(repeated|optional)\s+)?(map\s*<\s*\w+\s*,\s*[\w.]+\s*>|[\w.]+)\s+(\w+)"
                    r"\s*=\s*(\d+)\s*(?:\[.*\])?\s*;$")
_ENUM_VALUE = re.compile(r"^(\w+)\s*=\s*(-?\d+)\s*;$")
_RPC = re.compile(r"^rpc\s+(\w+)\s*\(\s*([\w.]+)\s*\)\s*returns\s*\(\s*(stream\s+)?([\w.]+)\s*\)"
                  r"\s*(?:;|\{\s*\})$")


def parse(path: pathlib.Path) -> ProtoFile:
    """Read one ``.proto`` file into services, messages and enums with their comments."""
    pf = ProtoFile(path=path.name)
    pending: list[str] = []  # comment lines waiting for their declaration
    stack: list[object] = []  # open blocks: Service / Message / Enum / ("oneof", name, message)
    last: Field | EnumValue | Rpc | None = None  # declaration whose end-of-line comment ...
    last_col = -1  # ... starts at this column: aligned comment lines below continue it
    for raw in path.read_text(encoding="utf-8").splitlines():
        code, _, trailing = raw.partition("//")
        code, trailing = code.strip(), trailing.strip()
        if not code and last is not None and raw.find("//") == last_col:
            last.comment = f"{last.comment} {trailing}".strip()
            continue
        last, last_col = None, -1
        if not code:
            if raw.strip().startswith("//"):
                # keep the indentation after "// " so indented lists stay lists
                pending.append(raw.strip()[2:].removeprefix(" ").rstrip())
            else:
                pending = []  # a blank line detaches a comment from what follows
            continue
        if code.startswith("syntax"):
            pf.comment, pending = _join(pending), []
            continue
        comment = _join(pending + ([trailing] if trailing else []))
        pending = []
        parent = stack[-1] if stack else pf
        if re.match(r"^(import|option)\s", code):  # not "optional"
            continue
        if m := re.match(r"^package\s+([\w.]+)\s*;$", code):
            pf.package = m.group(1)
        elif m := re.match(r"^service\s+(\w+)\s*\{$", code):
            svc = Service(m.group(1), comment)
            pf.services.append(svc)
            stack.append(svc)
        elif m := re.match(r"^message\s+(\w+)\s*\{\s*(\})?$", code):
            msg = Message(m.group(1), comment)
            pf.messages.append(msg)
            if not m.group(2):  # "message Empty {}" opens and closes on one line
                stack.append(msg)
        elif m := re.match(r"^enum\s+(\w+)\s*\{$", code):
            en = Enum(m.group(1), comment)
            (parent.enums if isinstance(parent, (Message, ProtoFile)) else pf.enums).append(en)
            stack.append(en)
        elif m := re.match(r"^oneof\s+(\w+)\s*\{$", code):
            stack.append(("oneof", m.group(1), parent))
        elif code == "}":
            stack.pop()
        elif m := _RPC.match(code):
            assert isinstance(parent, Service), f"{path}: rpc outside a service: {code}"
            last = Rpc(m.group(1), m.group(2), m.group(4), bool(m.group(3)), comment)
            parent.rpcs.append(last)
        elif isinstance(parent, Enum) and (m := _ENUM_VALUE.match(code)):
            last = EnumValue(m.group(1), int(m.group(2)), comment)
            parent.values.append(last)
        elif m := _FIELD.match(code):
            label, typ, name, number = m.groups()
            if isinstance(parent, tuple):  # inside a oneof
                msg, label = parent[2], f"oneof {parent[1]}"
            else:
                msg = parent
            if typ.startswith("map"):
                label, typ = "map", re.sub(r"\s+", "", typ)
            assert isinstance(msg, Message), f"{path}: field outside a message: {code}"
            last = Field(name, int(number), typ, label or "", comment)
            msg.fields.append(last)
        else:
            raise ValueError(f"{path}: cannot read this line: {raw!r}")
        if not trailing:
            last = None  # only an end-of-line comment can continue on the next lines
        elif last is not None:
            last_col = raw.find("//")
    if stack:
        raise ValueError(f"{path}: unclosed block at the end of the file")
    return pf


def _join(lines: list[str]) -> str:
    """Comment lines -> Markdown: prose lines joined, indented lines kept as a list/code."""
    out: list[str] = []
    for line in lines:
        if not line:
            out.append("")
        elif out and out[-1] and not line.startswith((" ", "-")) and not out[-1].startswith(" "):
            out[-1] += " " + line
        else:
            out.append(line)
    return "\n".join(out).strip()


# -- Markdown ----------------------------------------------------------------------------------
def _type_link(typ: str, known: dict[str, str]) -> str:
    """``typ`` in backticks, linked to its section when it is documented here."""
    m = re.match(r"map<(\w+),([\w.]+)>", typ)
    if m:
        return f"map<{m.group(1)}, {_type_link(m.group(2), known)}>"
    short = typ.rsplit(".", 1)[-1]
    return f"[`{short}`](#{known[short]})" if short in known else f"`{typ}`"


def _block(comment: str) -> list[str]:
    """A header comment with an indented list (e.g. the status codes) as a code block."""
    out, code = [], []
    for line in comment.splitlines():
        if line.startswith("  "):
            code.append(line[2:].rstrip())  # the list's own indentation (continuations) stays
            continue
        if code:
            out += ["", "```", *code, "```", ""]
            code = []
        out.append(line)
    if code:
        out += ["", "```", *code, "```"]
    return out


def render(files: list[ProtoFile]) -> str:
    # type name -> anchor of its heading (GitHub: lower case, dots dropped)
    known = {m.name: m.name.lower() for f in files for m in f.messages}
    known |= {e.name: e.name.lower() for f in files for e in f.enums}
    known |= {e.name: f"{m.name}{e.name}".lower()
              for f in files for m in f.messages for e in m.enums}
    lines = [
        "# pedsearch gRPC API",
        "",
        "<!-- generated by `python -m gateway.proto_doc` from proto/pedsearch/v1/*.proto: "
        "do not edit; edit the .proto comments and regenerate -->",
        "",
        "Package `" + (files[0].package if files else "") + "`. The Python stubs are generated "
        "at install into `pedsearch.v1` (`search_pb2`, `search_pb2_grpc`, `frame_pb2`); "
        "`gateway.client` wraps them in a typed client (see the README).",
        "",
    ]
    for f in files:
        for svc in f.services:
            lines += [f"## Service `{svc.name}`", "", *_block(f.comment), ""]
            if svc.comment:
                lines += [svc.comment, ""]
            lines += table(["RPC", "request", "response", "what it does"], [
                [f"`{r.name}`", _type_link(r.request, known),
                 ("stream " if r.server_streaming else "") + _type_link(r.response, known),
                 cell(r.comment)] for r in svc.rpcs])
            lines.append("")
    for f in files:
        lines += [f"## Messages of `{f.path}`", ""]
        if not f.services and f.comment:
            lines += [*_block(f.comment), ""]
        for m in f.messages:
            lines += [f"### {m.name}", ""]
            if m.comment:
                lines += [m.comment, ""]
            if m.fields:
                lines += table(["field", "#", "type", "label", "description"], [
                    [f"`{fl.name}`", fl.number, _type_link(fl.type, known), fl.label,
                     cell(fl.comment)] for fl in m.fields])
                lines.append("")
            for e in m.enums:
                lines += _enum(e, f"{m.name}.{e.name}")
        for e in f.enums:
            lines += _enum(e, e.name)
    return "\n".join(lines).rstrip() + "\n"


def _enum(e: Enum, title: str) -> list[str]:
    out = [f"### {title}", ""]
    if e.comment:
        out += [e.comment, ""]
    out += table(["value", "#", "description"],
                 [[f"`{v.name}`", v.number, cell(v.comment)] for v in e.values])
    return out + [""]


def generate(proto_dir: pathlib.Path = PROTO_DIR) -> str:
    return render([parse(proto_dir / name) for name in PROTO_FILES])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gateway.proto_doc", description=__doc__)
    ap.add_argument("--out", type=pathlib.Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="exit 1 if --out is out of date")
    args = ap.parse_args(argv)
    text = generate()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is out of date: run python -m gateway.proto_doc", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
