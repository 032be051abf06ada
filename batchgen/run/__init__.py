"""The pipeline of one run: runner, summary, progress snapshots."""
