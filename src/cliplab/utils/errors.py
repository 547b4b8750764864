"""User-facing errors: one clear line, no stack trace."""

import logging
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger("cliplab")


class CliplabError(Exception):
    """A problem the user can fix (bad config, missing data, wrong hardware): the message says how."""

    # True where every rank raises the same error at the same step by a shared decision (e.g. reduced
    # gradients): rank 0 alone prints it. Others may differ by rank (one rank's missing file), so all print.
    same_on_every_rank = False


class ConfigError(CliplabError):
    """An invalid or inconsistent configuration."""


class DataError(CliplabError):
    """Missing, empty or corrupt data."""


def exit_on_user_error(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Runs `fn`; a `CliplabError` (or a `???` config value read before validation named it) becomes one
    line on stderr and exit status 2."""
    from omegaconf.errors import MissingMandatoryValue

    try:
        return fn(*args, **kwargs)
    except CliplabError as err:
        print_user_error(err)
        sys.exit(2)
    except MissingMandatoryValue as err:
        from cliplab.utils.missing import missing_message

        print(f"error: {missing_message(err.full_key)}", file=sys.stderr, flush=True)
        sys.exit(2)


def print_user_error(err: CliplabError) -> None:
    """The error's one line on stderr; once per run, not once per rank, when every rank raises it."""
    from cliplab.utils.dist import dist_info

    if not err.same_on_every_rank or dist_info().rank == 0:
        print(f"error: {err}", file=sys.stderr, flush=True)
