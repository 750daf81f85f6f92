from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model

from webapp.experiments.models import Experiment
from webapp.ratings.judge_jobs import calibrated, has_final_model, judge_models
from webapp.ratings.models import Invitation, JudgeJob, RatingSetup, Vote
from webapp.ratings.votesets import BOTH_BAD, DISAGREE, TIES, Policy


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
        fields = ["what", "fraction", "checkpoints", "include_running", "include_base", "reveal", "judge_threshold"]
        labels = {"what": "What is rated", "fraction": "Fraction of training (0-1)",
                  "include_running": "Rate runs still training (at their latest evaluation)",
                  "include_base": "The base model takes part (its step-0 samples)",
                  "reveal": "Show raters who wrote the texts",
                  "judge_threshold": "A judge's votes may train the next round above this Cohen's kappa"}

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


class VoteDatasetForm(forms.Form):
    """Build a preference dataset from the votes: how ties, "both are bad" and disagreeing raters count, and
    which other experiments' votes join (ids of experiments this user owns)."""

    ties = forms.ChoiceField(choices=list(TIES.items()), initial="drop", label="Ties")
    both_bad = forms.ChoiceField(choices=list(BOTH_BAD.items()), initial="drop", label="“Both are bad”")
    disagree = forms.ChoiceField(choices=list(DISAGREE.items()), initial="keep", label="Raters who disagree")
    also = forms.CharField(required=False, label="Also the votes of experiments",
                           help_text="Ids of other experiments of yours, comma-separated (optional).")
    name = forms.CharField(required=False, max_length=200)
    judges = forms.BooleanField(required=False, label="Include the judges' votes",
                                help_text="Only when every judge's agreement with people passes your threshold.")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_also(self):
        ids = []
        for part in (self.cleaned_data.get("also") or "").replace(" ", "").split(","):
            if not part:
                continue
            if not part.lstrip("#").isdigit():
                raise forms.ValidationError(f"{part!r} is not an experiment id.")
            ids.append(int(part.lstrip("#")))
        found = list(Experiment.objects.filter(owner=self.user, pk__in=ids))
        if len(found) != len(set(ids)):
            raise forms.ValidationError("Name only experiments you own.")
        return found

    def policy(self) -> Policy:
        d = self.cleaned_data
        return Policy(ties=d["ties"], both_bad=d["both_bad"], disagree=d["disagree"])


class RoundForm(forms.Form):
    """Start the next round: from which contestants (default: the leader), with which methods, on which
    version of the vote dataset (default: a new one built from the votes now)."""

    picks = forms.MultipleChoiceField(required=False, label="Start from",
                                      help_text="Finished runs at their final evaluation, or the base model. None "
                                                "chosen: the current leader.")
    methods = forms.MultipleChoiceField(choices=[("ppo", "PPO"), ("grpo", "GRPO"), ("rloo", "RLOO"), ("dpo", "DPO")],
                                        initial=["ppo", "dpo"], label="Methods",
                                        help_text="RL methods optimise a reward model trained on the votes (they "
                                                  "wait for it); DPO trains on the vote pairs directly.")
    vote_dataset = forms.TypedChoiceField(coerce=int, empty_value=None, required=False, label="Vote dataset",
                                          help_text="Empty: build a new version from the votes now (ties and "
                                                    "“both bad” left out, every vote its own row).")

    def __init__(self, *args, contestants: list[tuple[str, str]], versions, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["picks"].choices = contestants
        self.fields["vote_dataset"].choices = [("", "a new version from the votes now")] + [
            (v.pk, f"v{v.version}: {v.dataset.rows} pairs from {v.votes} votes") for v in versions]


class JudgeForm(forms.Form):
    """Let a local judge vote (the owner): with which model (a built-in, or the final model of one of their
    finished runs: references, never paths), on the items people voted on (calibration) or on `limit` more
    pairs, which only a judge whose agreement with people passes the owner's threshold may label."""

    model = forms.ChoiceField(label="Judge model", help_text="A causal LM read from token probabilities, both orders.")
    mode = forms.ChoiceField(choices=JudgeJob.Mode.choices, initial=JudgeJob.Mode.CALIBRATE, label="What it does",
                             widget=forms.RadioSelect)
    limit = forms.IntegerField(required=False, min_value=1, max_value=JudgeJob.MAX_MORE, initial=100,
                               label="How many more pairs", help_text=f"With “more”: 1 to {JudgeJob.MAX_MORE}.")

    def __init__(self, *args, experiment: Experiment, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.experiment = experiment
        self.fields["model"].choices = judge_models(user)

    def clean_model(self):
        ref = self.cleaned_data["model"]
        if not has_final_model(ref):
            raise forms.ValidationError(f"No final model saved for {ref}.")
        return ref

    def clean(self):
        data = super().clean()
        mode, model = data.get("mode"), data.get("model")
        if mode == JudgeJob.Mode.CALIBRATE and not Vote.objects.at(self.experiment).exists():
            self.add_error("mode", "No person has voted yet: a judge calibrates on the items people voted on.")
        if mode == JudgeJob.Mode.MORE:
            if data.get("limit") is None and "limit" not in self.errors:
                self.add_error("limit", f"How many more pairs: 1 to {JudgeJob.MAX_MORE}.")
            if model and not calibrated(self.experiment, model):
                self.add_error("mode", "This judge may label more pairs only once its agreement with people passes "
                                       "your threshold (the lower end of Cohen's kappa's 95% interval; set it under "
                                       "Raters & setup): let it calibrate first.")
        return data
