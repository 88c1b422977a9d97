"""Inspect BP stores: `python -m ddmd_stream.streams ls FILE.bp` lists variables, types,
shapes and steps; `… export FILE.bp OUT.h5|OUT.npz [--vars …]` writes variables out;
`… verify RUN_DIR` prints a run's frame accounting (streamed vs stored per simulation) and
exits 1 on a loss."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ddmd_stream.streams.adios import Batch, adios_message
from ddmd_stream.streams.batches import frame_count
from ddmd_stream.streams.errors import StreamError
from ddmd_stream.streams.store import describe_store, read_store


def require_bp_store(path: Path) -> None:
    """StreamError unless `path` is a BP store folder (has an md.idx)."""
    if not (path / "md.idx").exists():
        raise StreamError(f"{path}: not a BP store (no md.idx inside); give a *.bp folder")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ddmd_stream.streams", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("ls", help="list variables, types, shapes and steps of a BP store")
    ls.add_argument("store", type=Path)
    sub.add_parser("verify", add_help=False,  # parsed by ddmd_stream.accounting
                   help="a run's frame accounting: streamed vs stored per simulation")
    export = sub.add_parser("export", help="write variables of a BP store to HDF5 (.h5) or .npz")
    export.add_argument("store", type=Path)
    export.add_argument("output", type=Path)
    export.add_argument("--vars", nargs="*", default=None, help="variables (default: all)")
    return parser


def _ls(store: Path) -> None:
    rows = describe_store(store)
    for name, kind, shape, steps, frames in rows:
        print(f"{name:20s} {kind:8s} frame shape {shape:>12s}  steps {steps:6d}  frames {frames}")
    if not rows:
        print(f"{store}: no steps written yet")


def _export(store: Path, output: Path, variables: list[str] | None) -> None:
    export_format(output)  # a bad suffix fails before the store is read
    data = read_store(store, variables)
    export_batch(data, output)
    frames = frame_count(data)
    print(f"wrote {frames} frames of {sorted(data)} to {output}")


def main(argv: list[str] | None = None) -> int:
    """The CLI; returns the exit status (2 with a one-line error on bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["verify"]:  # a run's frame accounting (ddmd_stream.accounting)
        from ddmd_stream.accounting import main as verify

        return verify(argv[1:])
    args = _parser().parse_args(argv)
    try:
        require_bp_store(args.store)
        if args.command == "ls":
            _ls(args.store)
        else:
            _export(args.store, args.output, args.vars)
        return 0
    except StreamError as error:
        print(f"error: {error}", file=sys.stderr)
    except (RuntimeError, ValueError, OSError) as error:
        print(f"error: {args.store}: {adios_message(error)}", file=sys.stderr)
    return 2


def export_format(output: Path) -> str:
    """The export format ("h5" or "npz") named by the suffix of `output`."""
    if output.suffix in (".h5", ".hdf5"):
        return "h5"
    if output.suffix == ".npz":
        return "npz"
    raise StreamError(f"{output}: unknown export format (use .h5, .hdf5 or .npz)")


def export_batch(data: Batch, output: Path) -> None:
    """Write `data` to `output` in the format its suffix names (gzip-compressed)."""
    if export_format(output) == "h5":
        import h5py

        with h5py.File(output, "w") as out:
            for name, array in data.items():
                out.create_dataset(name, data=array, compression="gzip")
    else:
        np.savez_compressed(output, **data)


if __name__ == "__main__":
    raise SystemExit(main())
