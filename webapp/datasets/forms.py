"""Forms of the datasets app: adding a dataset (an upload or a server path) and editing its mapping.
The training core judges the data (`training.tasks.DatasetTask`); its errors go beside the field."""

from __future__ import annotations

import re
from pathlib import Path

from django import forms

from training.config import ConfigError
from training.tasks import DatasetError
from training.tasks.dataset import FORMATS, ROLES
from webapp.datasets.actions import do_create_dataset, do_set_mapping
from webapp.datasets.models import Dataset
from webapp.datasets.uploads import max_upload_bytes
from webapp.experiments.references import inside_data_root, refused_path_message


class DatasetForm(forms.Form):
    name = forms.CharField(max_length=200)
    file = forms.FileField(required=False, label="File",
                           widget=forms.ClearableFileInput(attrs={"accept": ",".join(FORMATS)}),
                           help_text="JSONL, CSV (with a header row) or Parquet.")
    path = forms.CharField(max_length=1000, required=False, label="Or a server path",
                           help_text="A file or a save_to_disk folder under the folders the administrator "
                                     "lists in PTLAB_DATA_ROOTS.")
    hub_id = forms.CharField(max_length=200, required=False, label="Or a Hugging Face dataset",
                             help_text="A hub dataset id (name or org/name), loaded with datasets.load_dataset: "
                                       "by this server now (to check it), and by the workers when they train.")
    config = forms.CharField(max_length=200, required=False, label="Hub configuration",
                             help_text="The hub dataset's configuration (subset), if it has several.")
    split = forms.CharField(max_length=100, initial="train",
                            help_text="Split of a hub dataset or of a saved DatasetDict.")

    def __init__(self, *args, too_big: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.too_big = too_big

    def clean(self):
        data = super().clean()
        upload, path = data.get("file"), (data.get("path") or "").strip()
        hub = (data.get("hub_id") or "").strip()
        limit = max_upload_bytes()
        if self.too_big or upload and upload.size > limit:
            self.add_error("file", f"The file is larger than {limit // 2**20} MB.")
            return data
        if sum(map(bool, (upload, path, hub))) != 1:
            self.add_error("file", "Choose a file to upload, a server path or a hub dataset (one of them).")
            return data
        if hub and not HUB_DATASET.match(hub):
            self.add_error("hub_id", "A hub dataset id: a name or org/name (letters, digits, '-', '_', '.').")
        if data.get("config") and not hub:
            self.add_error("config", "Only a hub dataset has configurations.")
        if upload and Path(upload.name).suffix.lower() not in FORMATS:
            self.add_error("file", f"The file must end in {', '.join(FORMATS)}.")
        if path and not inside_data_root(path):
            self.add_error("path", refused_path_message())
        return data

    def save(self, owner) -> Dataset | None:
        """The saved dataset, or None with the loader's error added to the form."""
        data = self.cleaned_data
        hub = (data.get("hub_id") or "").strip()
        source = Dataset.Source.UPLOAD if data.get("file") else Dataset.Source.HUB if hub else Dataset.Source.SERVER
        dataset = Dataset(owner=owner, name=data["name"], split=(data.get("split") or "train").strip(), source=source,
                          path="" if data.get("file") else hub or data["path"].strip(),
                          config=(data.get("config") or "").strip() if hub else "")
        try:
            return do_create_dataset(dataset, data.get("file"))
        except ConfigError as e:  # DatasetError included
            self.add_error({Dataset.Source.UPLOAD: "file", Dataset.Source.HUB: "hub_id"}.get(source, "path"), e.message)
            return None


NONE = ""
HUB_DATASET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")


class MappingForm(forms.Form):
    """One select per role, among the dataset's columns."""

    def __init__(self, *args, dataset: Dataset, **kwargs):
        super().__init__(*args, **kwargs)
        self.dataset = dataset
        choices = [(NONE, "—")] + [(c, c) for c in dataset.columns]
        for role in ROLES:
            self.fields[role] = forms.ChoiceField(choices=choices, required=False, initial=dataset.mapping.get(role))

    def clean(self):
        data = super().clean()
        mapping = {role: col for role, col in data.items() if col}
        if len(set(mapping.values())) != len(mapping):
            raise forms.ValidationError("A column can have one role only.")
        self.mapping = mapping
        return data

    def save(self) -> bool:
        try:
            do_set_mapping(self.dataset, self.mapping)
        except DatasetError as e:
            self.add_error(e.column and next((r for r, c in self.mapping.items() if c == e.column), None), e.message)
            return False
        return True
