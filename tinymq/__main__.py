"""``python -m tinymq`` (or ``tinymq``): the command line. Commands: ``demo``, ``inspect``."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from tinymq import demo, inspect_cmd


class _BriefFormatter(logging.Formatter):
    """One line per record; an exception shows as its type and message only."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line += f" ({type(exc).__name__}: {exc})"
        return line


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, return its exit status."""
    parser = argparse.ArgumentParser(prog="tinymq", description="tinymq's command line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    demo_parser = commands.add_parser(
        "demo", help="run the word-lookup scenario of the seed article"
    )
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(run=demo.main)
    inspect_parser = commands.add_parser(
        "inspect", help="show each durable queue of a data directory, changing nothing"
    )
    inspect_cmd.add_arguments(inspect_parser)
    inspect_parser.set_defaults(run=inspect_cmd.main)
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    # tinymq logs every consumer failure with logger.exception. Here the failures are
    # expected and interleaved with progress lines, so each shows as one line: the
    # message id and the exception are enough, and a traceback would bury the progress.
    handler = logging.StreamHandler()
    handler.setFormatter(_BriefFormatter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
