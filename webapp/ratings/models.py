"""Blind pairwise rating: who may rate an experiment, which evaluation of each run is rated, and the votes.

A contestant is one run at one evaluation step (its key: "<run id>@<step>") or the base model (key
"base": the step-0 samples of a run that starts from the base model). An item is one eval prompt shown
by two contestants; its key is (prompt_id, first, second) with first < second, so the
same item is the same row whichever side each contestant was shown on. One vote per rater and item: a
rater who meets an item again (a repeat) replaces their vote; the answer it replaced is kept in
`previous_result`, which is how each rater's consistency is measured."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from webapp.experiments.actions import TRY_QUEUE
from webapp.experiments.jobs import BackgroundJob
from webapp.experiments.models import Experiment

BASE = "base"


def raterable_experiments(user) -> models.QuerySet[Experiment]:
    """Experiments `user` may rate: owned, or invited to."""
    invited = Invitation.objects.filter(rater=user).values("experiment_id")
    return Experiment.objects.filter(Q(owner=user) | Q(pk__in=invited))


def leaderboard_experiments(user) -> models.QuerySet[Experiment]:
    """Experiments whose leaderboard `user` may see: owned, shared with them (they see the runs anyway),
    or invited to rate."""
    invited = Invitation.objects.filter(rater=user).values("experiment_id")
    return Experiment.objects.filter(Q(pk__in=Experiment.objects.visible_to(user).values("pk")) | Q(pk__in=invited))


class Invitation(models.Model):
    """`rater` may rate `experiment` and see its leaderboard (and nothing else of it)."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="rating_invitations")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rating_invitations")
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["rater__username"]
        constraints = [models.UniqueConstraint(fields=["experiment", "rater"], name="invitation_once")]

    def __str__(self) -> str:
        return f"{self.rater} rates {self.experiment}"


class RatingSetup(models.Model):
    """The owner's choices for an experiment's rating. Absent: the defaults."""

    experiment = models.OneToOneField(Experiment, on_delete=models.CASCADE, related_name="rating_setup")
    class What(models.TextChoices):
        FINAL = "final", "each finished run at its final evaluation"
        FRACTION = "fraction", "each run at a chosen fraction of its training"
        CHECKPOINT = "checkpoint", "one named checkpoint (evaluation step) per run"

    what = models.CharField(max_length=16, choices=What.choices, default=What.FINAL,
                            help_text="Which evaluation of each run is rated.")
    fraction = models.FloatField(null=True, blank=True,
                                 help_text="With `fraction`: the share of its training (0-1) at which each run is "
                                           "rated (its nearest evaluation).")
    checkpoints = models.JSONField(default=dict, blank=True,
                                   help_text="With `checkpoint`: {run id: evaluation step}; a run not named is "
                                             "rated at its final evaluation.")
    include_running = models.BooleanField(default=False,
                                          help_text="Runs still training take part (at their latest evaluation).")
    include_base = models.BooleanField(default=True,
                                       help_text="The base model (step-0 samples) takes part as a contestant.")
    judge_threshold = models.FloatField(null=True, blank=True,
                                        help_text="Cohen's kappa (lower end of its 95% interval) a judge must reach "
                                                  "with people before its votes may train a next round; empty: never.")

    class Reveal(models.TextChoices):
        AFTER_VOTE = "after_vote", "after each vote (a text once attributed is not shown to that rater again)"
        AT_END = "at_end", "when the rater has rated every item (every item can be rated)"

    reveal = models.CharField(max_length=16, choices=Reveal.choices, default=Reveal.AFTER_VOTE,
                              help_text="When a rater learns who wrote the texts they voted on.")
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"rating setup of {self.experiment}"

    @classmethod
    def for_experiment(cls, experiment: Experiment) -> RatingSetup:
        """The saved setup, or an unsaved one with the defaults."""
        return cls.objects.filter(experiment=experiment).first() or cls(experiment=experiment)


class RedeemedToken(models.Model):
    """A rating token already used: its nonce, inserted once (the unique key makes redeeming atomic: of
    concurrent requests with one token, exactly one inserts it)."""

    nonce = models.CharField(max_length=32, unique=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return self.nonce


class VoteQuerySet(models.QuerySet):
    def at(self, experiment: Experiment, step: int = 0, *, judges: bool = False) -> VoteQuerySet:
        """The experiment's votes; people's only unless `judges` (a judge's votes are always marked)."""
        found = self.filter(experiment=experiment, step=step)
        return found if judges else found.filter(judge="")


class Vote(models.Model):
    class Outcome(models.TextChoices):
        A = "a", "A is better"  # the left side
        B = "b", "B is better"
        TIE = "tie", "Tie"
        BOTH_BAD = "both_bad", "Both are bad"

    # A vote's result whatever the sides: which of (first, second) was better.
    FIRST, SECOND, TIE, BOTH_BAD = "first", "second", "tie", "both_bad"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="votes")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="votes")
    step = models.PositiveIntegerField(default=0, help_text="0: each contestant's key names the evaluation step "
                                                              "it shows (votes cast before keys did were rewritten).")
    prompt_id = models.PositiveIntegerField()
    first = models.CharField(max_length=20, help_text="Contestant key: '<run id>@<step>', or 'base'. first < second.")
    second = models.CharField(max_length=20)
    sample_index = models.PositiveIntegerField(default=0, help_text="Which completion of each contestant was shown.")
    left_is_first = models.BooleanField(help_text="Whether `first` was shown on the left (as A).")
    outcome = models.CharField(max_length=8, choices=Outcome.choices, help_text="As shown: a = left, b = right.")
    previous_result = models.CharField(max_length=8, blank=True,
                                       help_text="The result (first/second/tie/both_bad) this vote replaced.")
    revisions = models.PositiveIntegerField(default=0, help_text="Times the rater voted on this item again.")
    judge = models.CharField(max_length=100, blank=True, default="",
                             help_text="Empty: a person's vote. Else the local judge that cast it (RLAIF): marked, "
                                       "left out of the people's leaderboard, and out of vote datasets unless asked.")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    objects = VoteQuerySet.as_manager()

    class Meta:
        ordering = ["updated", "id"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "rater", "step", "prompt_id", "first", "second"],
                                    name="vote_once_per_rater_and_item"),
            models.CheckConstraint(condition=Q(first__lt=models.F("second")), name="vote_contestants_ordered"),
        ]
        indexes = [models.Index(fields=["experiment", "step", "first", "second"], name="vote_experiment_step_pair")]

    def __str__(self) -> str:
        return f"{self.rater} on {self.first} vs {self.second} @ {self.step}/{self.prompt_id}: {self.outcome}"

    @staticmethod
    def result_of(outcome: str, left_is_first: bool) -> str:
        if outcome == Vote.Outcome.A:
            return Vote.FIRST if left_is_first else Vote.SECOND
        if outcome == Vote.Outcome.B:
            return Vote.SECOND if left_is_first else Vote.FIRST
        return Vote.TIE if outcome == Vote.Outcome.TIE else Vote.BOTH_BAD

    @property
    def result(self) -> str:
        return self.result_of(self.outcome, self.left_is_first)


class Round(models.Model):
    """Round `number` (2, 3, ...) of an experiment: runs trained from the votes of the rounds before it (a
    reward model on the vote dataset, RL runs with it as training signal, DPO on the vote pairs), started
    from the contestants the owner picked. Round 1 is the experiment's own runs (those in no Round)."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="rating_rounds")
    number = models.PositiveSmallIntegerField()
    started_from = models.JSONField(default=list, help_text="Contestant keys the round's runs start from.")
    starts = models.JSONField(default=dict, help_text="{run id: the contestant key that run starts from}.")
    vote_dataset = models.ForeignKey("VoteDataset", null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="rounds", help_text="The preference dataset built from the votes.")
    reward_model_run = models.ForeignKey("experiments.Run", null=True, blank=True, on_delete=models.SET_NULL,
                                         related_name="+")
    runs = models.ManyToManyField("experiments.Run", related_name="rating_rounds", blank=True)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["experiment", "number"]
        constraints = [models.UniqueConstraint(fields=["experiment", "number"], name="round_number_once")]

    def __str__(self) -> str:
        return f"round {self.number} of {self.experiment}"


def round_starts(experiment: Experiment) -> dict[int, str]:
    """{run id: the contestant key it starts from} for the runs of later rounds."""
    out = {}
    for starts in Round.objects.filter(experiment=experiment).values_list("starts", flat=True):
        out.update({int(k): v for k, v in (starts or {}).items()})
    return out


def run_rounds(experiment: Experiment) -> dict[int, int]:
    """{run id: round number} for the runs of later rounds (a run in none is of round 1)."""
    return dict(Round.runs.through.objects.filter(round__experiment=experiment)
                .values_list("run_id", "round__number"))


class VoteDataset(models.Model):
    """Version `version` of the preference dataset built from `experiment`'s votes (and its `sources`'):
    the Dataset holding the rows, the policy that made them, and how many votes went in."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="vote_datasets")
    version = models.PositiveIntegerField()
    sources = models.ManyToManyField(Experiment, related_name="+", help_text="Experiments whose votes were read.")
    dataset = models.OneToOneField("datasets.Dataset", on_delete=models.CASCADE, related_name="vote_source")
    policy = models.JSONField(default=dict, help_text="ties, both_bad, disagree.")
    votes = models.PositiveIntegerField(default=0, help_text="Votes behind at least one row.")
    votes_read = models.PositiveIntegerField(default=0)
    dropped = models.JSONField(default=dict, help_text="Reason -> votes left out.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["experiment", "-version"]
        constraints = [models.UniqueConstraint(fields=["experiment", "version"], name="vote_dataset_version_once")]

    def __str__(self) -> str:
        return f"votes of {self.experiment} v{self.version}"


class JudgeJob(BackgroundJob):
    """The owner's request that a local judge (webapp.ratings.judge) vote on an experiment, run by the worker of
    the `try` queue (webapp.ratings.judge_jobs) through the lifecycle of every background job
    (webapp.experiments.jobs). `model` is a reference (tiny, demo, run:<id>) the worker resolves, never a
    server path from a request. One active job per experiment (a partial unique index)."""

    class Mode(models.TextChoices):
        CALIBRATE = "calibrate", "vote on the items people voted on (calibration)"
        MORE = "more", "label more pairs no person rated"

    TASK = "webapp.ratings.tasks.run_judge_job"
    SERVER_ERROR = "The judge failed on the server."
    ACTIVE = (BackgroundJob.State.QUEUED, BackgroundJob.State.RUNNING)
    MAX_MORE = 500

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="judge_jobs")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                                     related_name="judge_jobs")
    model = models.CharField(max_length=40, help_text="The judge's model: tiny, demo or run:<id> (a finished run).")
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.CALIBRATE)
    limit = models.PositiveIntegerField(null=True, blank=True, help_text="With `more`: at most this many pairs.")
    items = models.PositiveIntegerField(default=0, help_text="Items the judge was given.")
    votes = models.PositiveIntegerField(default=0, help_text="Votes it cast.")
    started = models.DateTimeField(null=True, blank=True)
    ended = models.DateTimeField(null=True, blank=True)

    class Meta(BackgroundJob.Meta):
        constraints = [models.UniqueConstraint(fields=["experiment"], condition=Q(state__in=["queued", "running"]),
                                               name="judge_job_one_active_per_experiment")]
        indexes = [models.Index(fields=["requested_by", "created"], name="judge_job_user_created")]

    def __str__(self) -> str:
        return f"{self.name} on {self.experiment_id} ({self.mode}, {self.state})"

    @classmethod
    def queue(cls) -> str:
        return TRY_QUEUE  # its worker loads models already, and no training run holds it up

    @classmethod
    def claim_fields(cls) -> dict:
        return {"started": Now()}

    def end_fields(self, state: str) -> dict:
        return {"ended": Now()}

    @property
    def name(self) -> str:
        """The judge's name on its votes: the same model always votes as the same judge."""
        return f"pairwise_judge:{self.model}"

    @property
    def error(self) -> str:
        return self.message if self.state == self.State.FAILED else ""

    def status(self) -> dict:
        return {"id": self.pk, "experiment": self.experiment_id, "model": self.model, "judge": self.name,
                "mode": self.mode, "limit": self.limit, "state": self.state, "phase": self.phase,
                "progress": self.progress, "items": self.items, "votes": self.votes, "error": self.error,
                "message": self.message, "finished": self.finished,
                "created": self.created.isoformat(), "started": self.started.isoformat() if self.started else None,
                "ended": self.ended.isoformat() if self.ended else None}
