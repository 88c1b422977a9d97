"""`ddmd-stream COMMAND …`: one command for everything; each subcommand is an existing CLI.

| command | same as |
|---|---|
| `launch CONFIG [options]` | `python -m ddmd_stream.launch CONFIG [options]` |
| `check CONFIG` | `python -m ddmd_stream.launch CONFIG --check` |
| `plan CONFIG` | `python -m ddmd_stream.launch CONFIG --dry-run` |
| `report RUN_DIR` | `python -m ddmd_stream.report RUN_DIR` |
| `status RUN_DIR` | `python -m ddmd_stream.status RUN_DIR` (summary and tasks, running or not) |
| `export RUN_DIR` | `python -m ddmd_stream.export RUN_DIR` (trajectories, lineage, outliers) |
| `lineage RUN_DIR` | `python -m ddmd_stream.lineage RUN_DIR` (restarts as CSV) |
| `ls STORE.bp` | `python -m ddmd_stream.streams ls STORE.bp` |
| `verify RUN_DIR` | `python -m ddmd_stream.streams verify RUN_DIR` (frame accounting) |
| `schema` | `python -m ddmd_stream.config schema` |
| `presets` | the packaged launch presets: `NAME PATH` per line (`launch NAME` runs one) |

`ddmd-stream COMMAND --help` shows the options of that command; `ddmd-stream CONFIG.yaml …`
(the entry point's older form) still means `launch`. Bad input: one `error:` line, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

from ddmd_stream import __version__
from ddmd_stream.errors import InputError

EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help and the function that runs it on the rest of argv."""

    help: str
    run: Callable[[list[str]], int]


def _main_of(module: str, *before: str) -> Callable[[list[str]], int]:
    """A command running `module`'s `main` (imported only when run) on `before` + argv."""

    def run(argv: list[str]) -> int:
        return importlib.import_module(module).main([*before, *argv])

    return run


_launch = _main_of("ddmd_stream.launch")


def _presets(argv: list[str]) -> int:
    from ddmd_stream.config.defaults import packaged_presets

    argparse.ArgumentParser(
        prog="ddmd-stream presets",
        description="List the launch presets the package ships, one `NAME PATH` per line. "
        "`ddmd-stream launch NAME` (or check, plan) uses one. Installed, a preset's relative paths "
        "resolve to the package's XMLs and PDBs, its run directory under the current directory.",
    ).parse_args(argv)
    for name, path in packaged_presets().items():
        print(f"{name:<12} {path.resolve()}")
    return 0


COMMANDS: dict[str, Command] = {
    "launch": Command("run the workflow of a config", _launch),
    "check": Command("validate a config, its files and resources (launch --check)",
                     lambda argv: _launch([*argv, "--check"])),
    "plan": Command("print the task plan of a config (launch --dry-run)",
                    lambda argv: _launch([*argv, "--dry-run"])),
    "report": Command("write a run's report (RUN_DIR/report/index.html)",
                      _main_of("ddmd_stream.report.__main__")),
    "status": Command("print where a run stands: summary and tasks (from status.json)",
                      _main_of("ddmd_stream.status")),
    "export": Command("write a run's trajectories, lineage.csv and outlier PDBs",
                      _main_of("ddmd_stream.export")),
    "lineage": Command("print a run's restarts (where each came from) as CSV",
                       _main_of("ddmd_stream.lineage")),
    "ls": Command("list the variables, steps and frames of a BP store",
                  _main_of("ddmd_stream.streams.__main__", "ls")),
    "verify": Command("every frame streamed vs stored, per simulation; exit 1 on a loss",
                      _main_of("ddmd_stream.streams.__main__", "verify")),
    "schema": Command("print a documented example config (every field)",
                      _main_of("ddmd_stream.config.__main__", "schema")),
    "presets": Command("list the packaged launch presets (NAME PATH)", _presets),
}


def _parser() -> argparse.ArgumentParser:
    """The top-level parser: help, version and the list of commands (they parse their own)."""
    parser = argparse.ArgumentParser(prog="ddmd-stream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ddmd_stream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=command.help, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `ddmd-stream`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        argv = ["launch", *argv]
    if not argv or argv[0] not in COMMANDS:
        _parser().parse_args(argv)  # --help / --version exit 0; anything else is a usage error
        return EXIT_BAD_INPUT
    try:
        return COMMANDS[argv[0]].run(argv[1:])
    except InputError as error:  # a command that let one through: still one line
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
