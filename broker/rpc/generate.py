"""Regenerate the committed gRPC code and type stubs from the .proto files.

    python -m broker.rpc.generate            writes them next to the .proto files
    python -m broker.rpc.generate --check    exits 1 when the committed files are stale

Needs the dev extra (grpcio-tools, mypy-protobuf). The generated files are committed so that a
production install needs neither; a test runs --check so they never drift from the .proto.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the checkout: imports are broker.rpc...
PROTOS = ("broker/rpc/v1/credential_broker.proto",)
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generated_names(proto: str) -> list[str]:
    stem = proto.removesuffix(".proto")
    return [stem + suffix for suffix in SUFFIXES]


def generate(out: Path) -> None:
    """Run protoc (grpcio-tools) with the mypy-protobuf plugins into `out`."""
    from grpc_tools import protoc  # noqa: PLC0415 - dev-only dependency

    well_known = str(resources.files("grpc_tools") / "_proto")
    plugin_dir = Path(sys.executable).parent
    args = [
        "protoc",
        f"-I{PACKAGE_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *(str(PACKAGE_ROOT / proto) for proto in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the message above")


def stale_files() -> list[str]:
    """The committed generated files that differ from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = []
        for proto in PROTOS:
            for name in generated_names(proto):
                fresh = (Path(tmp) / name).read_bytes()
                committed = PACKAGE_ROOT / name
                if not committed.exists() or committed.read_bytes() != fresh:
                    stale.append(name)
        return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the files are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print("stale generated gRPC code: " + ", ".join(stale), file=sys.stderr)
            print("run: python -m broker.rpc.generate", file=sys.stderr)
            return 1
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for proto in PROTOS:
            for name in generated_names(proto):
                shutil.copyfile(Path(tmp) / name, PACKAGE_ROOT / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
