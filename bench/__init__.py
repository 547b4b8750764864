"""cliplab benchmarks, side by side with open_clip: `python -m bench` (see bench/README.md)."""
