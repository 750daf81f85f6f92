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
    step = forms.TypedChoiceField(coerce=int, empty_value=None, required=False, label="Evaluation step",
                                  help_text="Whose samples are rated. Default: the last step with samples for every run.")

    class Meta:
        model = RatingSetup
        fields = ["step", "include_base", "reveal"]
        labels = {"include_base": "The base model takes part (its step-0 samples)",
                  "reveal": "Show raters who wrote the texts"}

    def __init__(self, *args, steps: list[int], **kwargs):
        super().__init__(*args, **kwargs)
        last = f" (now {steps[-1]})" if steps else ""
        self.fields["step"].choices = [("", f"the last common step{last}")] + [(s, f"step {s}") for s in steps]
        self.fields["reveal"].required = False  # left out: after each vote (the default)

    def clean_reveal(self):
        return self.cleaned_data.get("reveal") or RatingSetup.Reveal.AFTER_VOTE
