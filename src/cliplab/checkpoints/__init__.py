"""Checkpoint files and folders: atomic writes, finding the newest complete one, loading safely."""
