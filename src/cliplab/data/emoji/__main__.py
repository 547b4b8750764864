"""`python -m cliplab.data.emoji`: build (or verify) the default emoji data set."""

from __future__ import annotations

import sys

from cliplab.data.build_cli import builder_parser, run_build

from .build import DEFAULT_HOLDOUT, STYLES, build


def main(argv: list[str] | None = None) -> int:
    parser = builder_parser(
        "python -m cliplab.data.emoji",
        __doc__,
        image_help="side of the square PNGs (default 64)",
        limit_help="only N concepts (for tests and smoke runs)",
    )
    parser.add_argument(
        "--extra-styles",
        action="store_true",
        help="also train on Noto and Fluent (needs npm; skipped without)",
    )
    parser.add_argument("--holdout-style", default=DEFAULT_HOLDOUT, choices=sorted(STYLES))
    parser.add_argument(
        "--novel-fraction", type=float, default=0.2, help="share of concepts kept out of training"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="render processes (default 2)")
    return run_build(parser, build, argv)


if __name__ == "__main__":
    sys.exit(main())
