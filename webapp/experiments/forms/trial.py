"""The try-a-model form: a prompt to a run's model beside others."""

from __future__ import annotations

from django import forms

from webapp.experiments.forms.fields import TextField
from webapp.experiments.models import Experiment, Run, Trial


class TrialForm(forms.Form):
    """Prompt a run's model (its final model or a checkpoint) beside the base model and up to three other runs."""

    prompt = TextField(max_length=4000, widget=forms.Textarea(attrs={"rows": 4}),
                       help_text="Sent as one user message through the model's chat template.")
    version = forms.ChoiceField(label="This run's model")
    base = forms.BooleanField(required=False, initial=True, label="Beside the base model")
    others = forms.TypedMultipleChoiceField(required=False, coerce=int, label="And other runs' final models",
                                            help_text="Up to three.", widget=forms.SelectMultiple(attrs={"size": 6}))
    temperature = forms.FloatField(min_value=0.0, max_value=2.0, initial=0.7, help_text="0: greedy (no sampling).",
                                   widget=forms.NumberInput(attrs={"step": "any"}))
    top_p = forms.FloatField(min_value=0.01, max_value=1.0, initial=1.0, label="Top p",
                             widget=forms.NumberInput(attrs={"step": "any"}))
    max_new_tokens = forms.IntegerField(min_value=1, max_value=512, initial=64, label="Max new tokens")
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=0, help_text="The same seed, the same sample.")

    def __init__(self, *args, run: Run, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.run, self.user = run, user
        self.versions = {v["key"]: v for v in run.model_versions()}
        self.fields["version"].choices = [(k, v["label"]) for k, v in self.versions.items()]
        candidates = (Run.objects.filter(experiment__in=Experiment.objects.visible_to(user),
                                         state=Run.State.SUCCEEDED).exclude(pk=run.pk).exclude(out_dir="")
                      .select_related("experiment").order_by("-experiment__created", "experiment_id", "id")[:200])
        self.candidates = {r.pk: r for r in candidates}
        self.fields["others"].choices = [(r.pk, f"{r.experiment.name} · {r.label} (#{r.pk})")
                                         for r in self.candidates.values()]

    def clean_others(self) -> list[Run]:
        ids = list(dict.fromkeys(self.cleaned_data["others"]))
        if len(ids) > Trial.MAX_OTHERS:
            raise forms.ValidationError(f"At most {Trial.MAX_OTHERS} other runs.")
        runs = [self.candidates[i] for i in ids if i in self.candidates]
        missing = [r.label for r in runs if not any(v["key"] == "final" for v in r.model_versions())]
        if missing:
            raise forms.ValidationError(f"No final model saved for {', '.join(missing)}.")
        return runs

    def clean(self):
        data = super().clean()
        if "version" in data:
            data["version"] = self.versions[data["version"]]
        return data
