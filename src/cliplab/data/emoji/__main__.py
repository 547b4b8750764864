"""`python -m cliplab.data.emoji`: build (or verify) the default emoji data set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import DEFAULT_HOLDOUT, STYLES, build
from .fetch import SourceUnavailable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cliplab.data.emoji", description=__doc__)
    parser.add_argument("--image-size", type=int, default=64, help="side of the square PNGs (default 64)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    parser.add_argument("--limit", type=int, default=None, help="only N concepts (for tests and smoke runs)")
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
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the cache)")
    args = parser.parse_args(argv)
    try:
        root = build(
            args.image_size,
            force=args.force,
            limit=args.limit,
            extra_styles=args.extra_styles,
            holdout_style=args.holdout_style,
            novel_fraction=args.novel_fraction,
            seed=args.seed,
            workers=args.workers,
            out_dir=args.out,
        )
    except (SourceUnavailable, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
