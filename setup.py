"""Build hook: generate the protobuf / gRPC stubs from proto/ with grpcio-tools.

The stubs are never committed or edited by hand: every build (wheel or editable install) writes
them into ``pedsearch/v1/`` of the tree being built (git-ignored) before setuptools collects the
packages, so a changed ``.proto`` takes effect by re-running ``pip install -e .``.
"""

from __future__ import annotations

import pathlib

from setuptools import setup

ROOT = pathlib.Path(__file__).parent.resolve()
PROTO_ROOT = ROOT / "proto"


def generate_stubs(out_dir: pathlib.Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p) for p in PROTO_ROOT.rglob("*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files under {PROTO_ROOT}")
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("grpc_tools.protoc failed on " + " ".join(protos))
    # protoc writes modules, not packages: mark every generated folder as a package.
    for proto in protos:
        rel = pathlib.Path(proto).relative_to(PROTO_ROOT).parent
        pkg = out_dir / rel
        while pkg != out_dir and pkg.is_relative_to(out_dir):
            init = pkg / "__init__.py"
            if not init.exists():
                init.write_text('"""Generated from proto/ by grpcio-tools at build time."""\n')
            pkg = pkg.parent


generate_stubs(ROOT)
setup()
