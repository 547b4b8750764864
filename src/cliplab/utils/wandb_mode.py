"""W&B without a prompt: online when the user has logged in, offline otherwise."""

import netrc
import os


def wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])


def ensure_wandb_mode() -> str:
    """Sets WANDB_MODE=offline unless the user chose a mode or has credentials; returns the mode."""
    if "WANDB_MODE" not in os.environ and not wandb_logged_in():
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    return os.environ.get("WANDB_MODE", "online")


def finish_wandb() -> None:
    """Closes the active W&B run, so multirun jobs never leak into one another."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()
