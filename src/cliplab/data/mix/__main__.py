"""`python -m cliplab.data.mix`: build (or verify) the mixed training set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cliplab.data.emoji.fetch import SourceUnavailable

from .build import build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cliplab.data.mix", description=__doc__)
    parser.add_argument("--image-size", type=int, default=64, help="side of the square images (default 64)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    parser.add_argument(
        "--limit", type=int, default=None, help="at most N items per source (tests, smoke runs)"
    )
    parser.add_argument(
        "--emoji-root",
        type=Path,
        default=None,
        help="emoji data set to extend (default: build the default one)",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the cache)")
    args = parser.parse_args(argv)
    try:
        emoji_root = args.emoji_root
        if emoji_root is None:
            from cliplab.data.prepare import prepare

            emoji_root = prepare(image_size=args.image_size)
        root = build(
            args.image_size, emoji_root=emoji_root, limit=args.limit, force=args.force, out_dir=args.out
        )
    except (SourceUnavailable, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
