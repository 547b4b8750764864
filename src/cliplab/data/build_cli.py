"""What the data builders' command lines share (`python -m cliplab.data.emoji`, `python -m cliplab.data.mix`):
the options every builder takes, and one way to run a build: its folder on stdout, or one line on stderr."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from cliplab.data.emoji.fetch import SourceUnavailable


def builder_parser(prog: str, description: str, image_help: str, limit_help: str) -> argparse.ArgumentParser:
    """`--image-size`, `--force` and `--limit`; the builder adds its own options, `run_build` adds `--out`."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--image-size", type=int, default=64, help=image_help)
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    parser.add_argument("--limit", type=int, default=None, help=limit_help)
    return parser


def run_build(parser: argparse.ArgumentParser, build: Callable[..., Path], argv: list[str] | None) -> int:
    """`build(**options)` (each option's name is the builder's keyword) and print its folder: exit status 0;
    an unreachable source or a wrong option is one line on stderr and exit status 1."""
    parser.add_argument(
        "--out",
        dest="out_dir",
        metavar="OUT",
        type=Path,
        default=None,
        help="output folder (default: the cache)",
    )
    options = vars(parser.parse_args(argv))
    try:
        root = build(**options)
    except (SourceUnavailable, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(root)
    return 0
