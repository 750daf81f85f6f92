"""Saving a dataset: the file lands on disk first, is checked whole by training's loader, and the row is
written only if it loads; on any error the file is removed (nothing half-saved)."""

from __future__ import annotations

from pathlib import Path

from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from training.tasks import DatasetError, DatasetSpec, DatasetTask, guess_mapping
from training.tasks.dataset import content_hash, read_rows
from webapp.datasets.models import Dataset


def load(dataset: Dataset, mapping: dict | None = None) -> DatasetTask:
    """The dataset as training sees it (raises DatasetError naming the row, column and line)."""
    spec = {**dataset.spec(), "mapping": dataset.mapping if mapping is None else mapping}
    return DatasetTask(spec)


def do_create_dataset(dataset: Dataset, upload: UploadedFile | None = None) -> Dataset:
    """Save an unsaved dataset (with its upload): checked, hashed and its mapping guessed, or nothing at all."""
    if upload is not None:
        dataset.file.save(Path(upload.name).name, upload, save=False)
    try:
        check_dataset(dataset)
        with transaction.atomic():
            dataset.save()
    except BaseException:
        if dataset.file:
            dataset.file.delete(save=False)
        raise
    return dataset


def check_dataset(dataset: Dataset) -> None:
    """Check every row of an unsaved dataset's file, hash it and guess its mapping (raises DatasetError):
    everything but the save."""
    raw = read_rows(DatasetSpec.of(dataset.spec()))  # every row readable, or a DatasetError
    columns = list(dict.fromkeys(k for row in raw.rows[:100] for k in row))
    guess = guess_mapping(columns)
    if "prompt" in guess or "messages" in guess:
        fill_from(dataset, load(dataset, mapping={}))  # guessed again by the loader, checked on every row
    else:  # nothing to guess from: saved unmapped, the user maps it on its page
        dataset.mapping, dataset.columns, dataset.content_hash = guess, columns, content_hash(raw.rows)
        dataset.rows = len(raw.rows)


def fill_from(dataset: Dataset, task: DatasetTask) -> None:
    summary = task.summary()
    dataset.mapping = task.mapping
    dataset.columns = list(dict.fromkeys(k for row in task.raw.rows[:100] for k in row))
    dataset.content_hash = task.hash
    dataset.rows, dataset.train_rows, dataset.eval_rows = summary["rows"], summary["train"], summary["eval"]


def do_set_mapping(dataset: Dataset, mapping: dict[str, str]) -> DatasetTask:
    """Check the whole dataset under a new mapping, then store it; raises DatasetError and changes nothing.
    A dataset an experiment uses is immutable: its runs must stay reproducible."""
    if dataset.in_use():
        raise DatasetError("an experiment uses this dataset, so its mapping is fixed: add the file again as a new "
                           "dataset to map it differently")
    task = load(dataset, mapping=mapping)
    if task.hash != dataset.content_hash:
        raise DatasetError(f"the data changed on disk since it was saved (hash {task.hash[:12]}, was "
                           f"{dataset.content_hash[:12]}): add it again as a new dataset")
    fill_from(dataset, task)
    dataset.save(update_fields=["mapping", "columns", "rows", "train_rows", "eval_rows"])
    return task
