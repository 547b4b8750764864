"""Pictures of an evaluation, written beside results.md (and logged to W&B by the training run).

`data`: what the evaluators hand over (per-class accuracy, retrieval rankings, k-shot curves); one module
per picture draws it with matplotlib's object API (no pyplot, so no global backend is switched: scripts,
SLURM jobs and notebooks alike); `write` picks the pictures an evaluation's outputs allow.
"""
