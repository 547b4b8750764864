"""Scaling sweeps: idempotent multirun jobs, run collection, power-law fits and reports."""
