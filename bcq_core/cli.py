"""The ``bcq`` command.  Each area owns its subcommands in its own module, which exposes
``add_parser(subparsers)``; the parser it adds sets ``func(args) -> int`` (the exit status).

Modules are imported only when listed here, and their heavy imports (torch, cupy) happen
inside ``func``, so ``bcq --help`` stays fast and works without a GPU.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMAND_MODULES = (
    "bcq_core.commands",   # quantize, info, error
    "benchmarks.commands",  # bench
    "sim.commands",        # sim
    "llm.commands",        # demo, eval
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bcq", description="Binary-coded quantization workbench (AnyBCQ).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            # that area (or its package) is not installed: leave its commands out
            if e.name and (name == e.name or name.startswith(e.name + ".")):
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, OSError) as e:
        print(f"bcq {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
