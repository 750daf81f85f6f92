from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model

from webapp.experiments.models import Experiment
from webapp.ratings.models import Invitation, RatingSetup


class InviteForm(forms.Form):
    username = forms.CharField(max_length=150, label="Invite a rater",
                               help_text="The username of an existing user. They will see only the rating page "
                                         "and the leaderboard of this experiment.")

    def __init__(self, *args, experiment: Experiment, **kwargs):
        super().__init__(*args, **kwargs)
        self.experiment = experiment

    def clean_username(self):
        name = self.cleaned_data["username"].strip()
        user = get_user_model().objects.filter(username=name).first()
        if user is None:
            raise forms.ValidationError(f"There is no user {name!r}.")
        if user.pk == self.experiment.owner_id:
            raise forms.ValidationError("The owner can always rate their own experiment.")
        if Invitation.objects.filter(experiment=self.experiment, rater=user).exists():
            raise forms.ValidationError(f"{name} is already invited.")
        self.user = user
        return name


class SetupForm(forms.ModelForm):
    checkpoints = forms.CharField(required=False, label="Named checkpoints",
                                  help_text="With named checkpoints: one `run id = evaluation step` per line (or "
                                            "comma-separated); a run not named is rated at its final evaluation.")

    class Meta:
        model = RatingSetup
        fields = ["what", "fraction", "checkpoints", "include_running", "include_base", "reveal"]
        labels = {"what": "What is rated", "fraction": "Fraction of training (0-1)",
                  "include_running": "Rate runs still training (at their latest evaluation)",
                  "include_base": "The base model takes part (its step-0 samples)",
                  "reveal": "Show raters who wrote the texts"}

    def __init__(self, *args, steps_by_run: dict[int, set[int]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps_by_run = steps_by_run or {}
        self.fields["reveal"].required = False  # left out: after each vote (the default)
        self.fields["what"].required = False
        if self.instance and self.instance.checkpoints and not self.is_bound:
            self.initial["checkpoints"] = "\n".join(f"{k} = {v}" for k, v in sorted(self.instance.checkpoints.items()))

    def clean_reveal(self):
        return self.cleaned_data.get("reveal") or RatingSetup.Reveal.AFTER_VOTE

    def clean_what(self):
        return self.cleaned_data.get("what") or RatingSetup.What.FINAL

    def clean_fraction(self):
        value = self.cleaned_data.get("fraction")
        if value is not None and not 0 <= value <= 1:
            raise forms.ValidationError("A fraction between 0 and 1.")
        return value

    def clean_checkpoints(self):
        out: dict[str, int] = {}
        for part in (self.cleaned_data.get("checkpoints") or "").replace(",", "\n").splitlines():
            if not part.strip():
                continue
            run, _, step = part.partition("=")
            run, step = run.strip().lstrip("#"), step.strip()
            if not (run.isdigit() and step.isdigit()):
                raise forms.ValidationError(f"{part.strip()!r}: write `run id = evaluation step`.")
            if int(step) not in self.steps_by_run.get(int(run), ()):
                raise forms.ValidationError(f"Run #{run} has no samples at step {step}.")
            out[run] = int(step)
        return out

    def clean(self):
        data = super().clean()
        if data.get("what") == RatingSetup.What.FRACTION and data.get("fraction") is None:
            self.add_error("fraction", "Give the fraction of training at which runs are rated.")
        if data.get("what") == RatingSetup.What.CHECKPOINT and not data.get("checkpoints"):
            self.add_error("checkpoints", "Name at least one checkpoint.")
        return data
