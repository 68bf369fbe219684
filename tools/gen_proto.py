"""Regenerate helper/_proto from proto/workload.proto.

Usage: python tools/gen_proto.py [--out DIR]

The generated gRPC module imports its message module as a top-level module
(`import workload_pb2`); it is rewritten to a package-relative import so that
helper._proto works without touching sys.path. tests/workload/test_proto.py runs this into
a temporary directory and fails when the committed files differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "helper" / "_proto"


def generate(out_dir: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(PROTO_DIR / "workload.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    grpc_file = out_dir / "workload_pb2_grpc.py"
    text = grpc_file.read_text()
    text = text.replace(
        "import workload_pb2 as workload__pb2", "from . import workload_pb2 as workload__pb2"
    )
    grpc_file.write_text(text)
    init = out_dir / "__init__.py"
    init.write_text('"""Generated Workload API modules: run tools/gen_proto.py, do not edit."""\n')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    generate(parser.parse_args().out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
