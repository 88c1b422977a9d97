"""Configuration of a whole run: pydantic models, YAML loading, readable errors.

`python -m ddmd_stream.config check FILE` validates a config and prints the resolved result;
`python -m ddmd_stream.config schema` prints a documented example YAML.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ddmd_stream.config.errors import ConfigError
from ddmd_stream.config.example import example_yaml
from ddmd_stream.config.load import check_inputs, dump_config, load_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ddmd_stream.config", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a config and print the resolved result")
    check.add_argument("file", type=Path)
    sub.add_parser("schema", help="print a documented example YAML")
    return parser


def _check(file: Path) -> int:
    """Print the resolved config and one `error:` line per problem; 2 if there are any."""
    try:
        config = load_config(file)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    problems = check_inputs(config)
    sys.stdout.write(dump_config(config))
    for problem in problems:
        print(f"error: {file}: {problem}", file=sys.stderr)
    return 2 if problems else 0


def main(argv: list[str] | None = None) -> int:
    """Run `check FILE` or `schema`; the exit status (2 for a bad config)."""
    args = _parser().parse_args(argv)
    if args.command == "schema":
        sys.stdout.write(example_yaml())
        return 0
    return _check(args.file)


if __name__ == "__main__":
    raise SystemExit(main())
