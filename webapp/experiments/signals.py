"""What the experiments app tells the apps above it, without importing them (they connect receivers in
their AppConfig.ready)."""

from django.dispatch import Signal

# Runs reached a final state (succeeded, failed, cancelled); sent once that has committed, with
# `run_ids`. The comparison stores their downsampled series.
runs_ended = Signal()
