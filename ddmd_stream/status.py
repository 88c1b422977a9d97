"""`python -m ddmd_stream.status RUN_DIR` (`ddmd-stream status RUN_DIR`): where a run stands.

Prints the summary the launcher last wrote to RUN/status.json and one line per task from the
tasks' own status.json (fresher), as the live page shows them; works on a running and on a
finished run. Bad input: one `error:` line, exit 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ddmd_stream.errors import InputError
from ddmd_stream.report.load import check_run_dir
from ddmd_stream.workflow.progress import read_run_status, read_task_status, render, render_tasks

EXIT_BAD_INPUT = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ddmd-stream status", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="run directory (workflow.run_dir)")
    args = parser.parse_args(argv)
    try:
        run = check_run_dir(args.run_dir)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from rich.console import Console

    console = Console()
    summary = read_run_status(run)
    if summary is None:
        console.print(f"no {run.status_file} yet (the launcher writes it every few seconds)")
    else:
        age = time.time() - run.status_file.stat().st_mtime
        console.print(render(summary))
        console.print(f"{run.status_file} written {age:.0f} s ago")
    console.print(render_tasks(read_task_status(run), summary, time.time()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
