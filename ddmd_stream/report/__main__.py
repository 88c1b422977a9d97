"""`python -m ddmd_stream.report RUN_DIR [--out DIR]`: the run report (timeline, tables, plots).

Works on a finished run and on one still going (a partial report). Writes RUN_DIR/report/
unless --out is given; open its index.html (or report.md).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ddmd_stream.errors import InputError
from ddmd_stream.report import build_report

EXIT_BAD_INPUT = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ddmd_stream.report", description=__doc__)
    parser.add_argument("run_dir", type=Path, help="run directory (workflow.run_dir)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (RUN_DIR/report)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every file written")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = build_report(args.run_dir, args.out)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = args.out or args.run_dir / "report"
    print(f"{summary['state']} run: report in {out / 'index.html'} and {out / 'report.md'}")
    for note in summary["notes"]:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
