"""What an experiment's owner may change once it exists."""

from __future__ import annotations

from django import forms

from webapp.experiments.models import Experiment


class ExperimentEditForm(forms.Form):
    """What its owner may change once it exists: its name, its notes (Markdown) and its tags."""

    name = forms.CharField(max_length=200)
    notes = forms.CharField(required=False, max_length=20_000, widget=forms.Textarea(attrs={"rows": 10}),
                            help_text="Markdown: **bold**, lists, links, `code`. Raw HTML is shown as text.")
    tags = forms.CharField(required=False, max_length=500, help_text="Separated by commas or spaces.")

    MAX_TAGS = 20

    @classmethod
    def for_experiment(cls, experiment: Experiment, data=None) -> ExperimentEditForm:
        initial = {"name": experiment.name, "notes": experiment.notes,
                   "tags": " ".join(t.name for t in experiment.tags.all())}
        return cls(data, initial=initial)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("A name cannot be blank.")
        return name

    def clean_tags(self) -> list[str]:
        from webapp.experiments.models import tag_validator

        words = [w.strip().lower() for w in self.cleaned_data["tags"].replace(",", " ").split()]
        tags = list(dict.fromkeys(w for w in words if w))
        if len(tags) > self.MAX_TAGS:
            raise forms.ValidationError(f"At most {self.MAX_TAGS} tags.")
        for tag in tags:
            tag_validator(tag)
        return tags
