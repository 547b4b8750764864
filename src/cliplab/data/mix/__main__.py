"""`python -m cliplab.data.mix`: build (or verify) the mixed training set."""

from __future__ import annotations

import sys
from pathlib import Path

from cliplab.data.build_cli import builder_parser, run_build

from .build import build


def _build(image_size: int, emoji_root: Path | None, **options) -> Path:
    """The mixed set over `emoji_root`, or over the default emoji data set (built first when missing)."""
    if emoji_root is None:
        from cliplab.data.prepare import prepare

        emoji_root = prepare(image_size=image_size)
    return build(image_size, emoji_root=emoji_root, **options)


def main(argv: list[str] | None = None) -> int:
    parser = builder_parser(
        "python -m cliplab.data.mix",
        __doc__,
        image_help="side of the square images (default 64)",
        limit_help="at most N items per source (tests, smoke runs)",
    )
    parser.add_argument(
        "--emoji-root",
        type=Path,
        default=None,
        help="emoji data set to extend (default: build the default one)",
    )
    return run_build(parser, _build, argv)


if __name__ == "__main__":
    sys.exit(main())
