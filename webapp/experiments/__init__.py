"""Experiments and their runs: the domain every other app builds on. An experiment compares methods x seeds
on one base model and task; a run is one training job, and the Run table is the source of truth for its
state. Here live the models (Experiment, Run, Metric, Sample), the form that validates a new experiment,
the pages, the `do_*` actions that write several rows at once, the method list (`methods`), who may see
or change what (`access`), and the signals by which it tells the apps above it that runs ended."""
