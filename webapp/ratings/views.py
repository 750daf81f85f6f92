"""Pages of the ratings app. Thin: access here, validation in forms, logic in arena/leaderboard/actions.

Access: the owner and invited raters may rate; they and the users the experiment is shared with may see
the leaderboard; only the owner invites and chooses the step. Anyone else gets 404."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from training.tasks import DatasetError, DatasetSpec
from training.tasks.dataset import read_rows
from webapp.datasets.models import Dataset
from webapp.experiments.access import experiment_for_user, experiments_for_user
from webapp.experiments.models import Experiment
from webapp.experiments.quotas import QuotaExceeded
from webapp.ratings.actions import do_cast_vote, do_invite
from webapp.ratings.arena import Arena
from webapp.ratings.forms import InviteForm, JudgeForm, RoundForm, SetupForm, VoteDatasetForm
from webapp.ratings.judge import calibration
from webapp.ratings.judge_jobs import JudgeBusy, do_start_judge_job
from webapp.ratings.leaderboard import BOTH_BAD_CHOICES, as_json, build_leaderboard, leaderboard_context
from webapp.ratings.models import (
    Invitation,
    JudgeJob,
    RatingSetup,
    Vote,
    VoteDataset,
    leaderboard_experiments,
    raterable_experiments,
)
from webapp.ratings.rounds import RoundError, do_start_round, pickable, rounds_summary
from webapp.ratings.tokens import redeem_token
from webapp.ratings.votesets import Policy, do_build_vote_dataset, to_jsonl, to_parquet


def _get_experiment_to_rate(request: HttpRequest, pk: int) -> Experiment:
    return get_object_or_404(raterable_experiments(request.user), pk=pk)


def _get_experiment_for_leaderboard(request: HttpRequest, pk: int) -> Experiment:
    return get_object_or_404(leaderboard_experiments(request.user).select_related("owner"), pk=pk)


def _get_own_experiment(request: HttpRequest, pk: int) -> Experiment:
    return experiment_for_user(request.user, pk, write=True)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        raise Http404("No such step.") from None


@login_required
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    """The experiments this user may rate, with their own vote counts."""
    experiments = (raterable_experiments(request.user).select_related("owner")
                   .annotate(my_votes=Count("votes", filter=Q(votes__rater=request.user))))
    return render(request, "ratings/index.html", {"experiments": experiments})


@login_required
@require_GET
def rate(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = _get_experiment_to_rate(request, pk)
    arena = Arena(experiment)
    return render(request, "ratings/rate.html", {
        "experiment": experiment, "step": arena.step, "n_contestants": len(arena.contestants),
        "progress": arena.progress(request.user) if arena.step is not None else None,
        "outcomes": [(n + 1, value, label) for n, (value, label) in enumerate(Vote.Outcome.choices)],
        "can_manage": experiment.is_owned_by(request.user),
    })


@never_cache
@login_required
@require_GET
def next_item(request: HttpRequest, pk: int) -> JsonResponse:
    """The next item to rate: texts by side and an opaque token; nothing about who wrote them."""
    experiment = _get_experiment_to_rate(request, pk)
    return JsonResponse(Arena(experiment).next_payload(request.user, request.session))


@never_cache
@login_required
@require_POST
def vote(request: HttpRequest, pk: int) -> JsonResponse:
    """Cast a vote on the item a token stands for; the answer reveals who wrote which side."""
    experiment = _get_experiment_to_rate(request, pk)
    outcome = request.POST.get("outcome", "")
    if outcome not in Vote.Outcome.values:
        return JsonResponse({"error": "Unknown outcome."}, status=400)
    item = redeem_token(request.session, experiment.pk, request.POST.get("token", ""))
    arena = Arena(experiment, step=item.step) if item else None
    texts = arena.texts(item) if arena else None
    if texts is None:
        return JsonResponse({"error": "This item has expired; here is another one."}, status=409)
    do_cast_vote(experiment, request.user, item, outcome)
    return JsonResponse({
        "ok": True, "outcome": outcome, "reveal": arena.reveal(item, texts),
        "progress": arena.progress(request.user),
    })


@login_required
@require_GET
def leaderboard(request: HttpRequest, pk: int) -> HttpResponse:
    return _leaderboard_page(request, _get_experiment_for_leaderboard(request, pk))


def _leaderboard_page(request: HttpRequest, experiment: Experiment, judge_form: JudgeForm | None = None,
                      status: int = 200) -> HttpResponse:
    """The leaderboard; for the owner also the judge form (`judge_form`: a refused one, shown with its errors)."""
    pk = experiment.pk
    step = _int_or_none(request.GET.get("step"))
    both_bad = request.GET.get("both_bad", "tie")
    context = leaderboard_context(experiment, step=step, both_bad=both_bad)
    judges = calibration(experiment, rounds=200) if Vote.objects.filter(experiment=experiment).exclude(
        judge="").exists() else []
    can_manage = experiment.is_owned_by(request.user)
    context.update({
        "experiment": experiment, "both_bad_choices": BOTH_BAD_CHOICES.items(),
        "can_rate": raterable_experiments(request.user).filter(pk=pk).exists(),
        "can_manage": can_manage,
        "can_see_experiment": experiments_for_user(request.user).filter(pk=pk).exists(),
        "judges": judges,
    })
    if can_manage:
        context.update({
            "judge_form": judge_form or JudgeForm(experiment=experiment, user=request.user),
            "judge_job": experiment.judge_jobs.first(),
            "judge_may_label_more": any(j.allowed for j in judges),
        })
    return render(request, "ratings/leaderboard.html", context, status=status)


@login_required
@require_POST
def start_judge(request: HttpRequest, pk: int) -> HttpResponse:
    """The owner lets a judge vote (a job on the `try` queue's worker); others get 404."""
    experiment = _get_own_experiment(request, pk)
    form = JudgeForm(request.POST, experiment=experiment, user=request.user)
    if not form.is_valid():
        return _leaderboard_page(request, experiment, form, status=400)
    try:
        job = do_start_judge_job(experiment, request.user, **form.cleaned_data)
    except (JudgeBusy, QuotaExceeded) as e:
        form.add_error(None, str(e))
        return _leaderboard_page(request, experiment, form, status=409 if isinstance(e, JudgeBusy) else 429)
    messages.success(request, f"{job.name} is queued; this page follows it.")
    return redirect(reverse("ratings:leaderboard", args=[pk]) + "#judge")


@never_cache
@login_required
@require_GET
def judge_job_status(request: HttpRequest, pk: int) -> JsonResponse:
    """Polled by static/js/job.js on the leaderboard (the owner's); its link reloads the calibration table."""
    job = get_object_or_404(JudgeJob.objects.filter(experiment__in=experiments_for_user(request.user, write=True)),
                            pk=pk)
    url = reverse("ratings:leaderboard", args=[job.experiment_id]) + f"?judged={job.pk}#judges"
    return JsonResponse({**job.status(), "url": url if job.state == JudgeJob.State.DONE else None})


@login_required
@require_GET
def leaderboard_json(request: HttpRequest, pk: int) -> JsonResponse:
    experiment = _get_experiment_for_leaderboard(request, pk)
    board = build_leaderboard(experiment, step=_int_or_none(request.GET.get("step")),
                              both_bad=request.GET.get("both_bad", "tie"))
    return JsonResponse(as_json(board))


@login_required
def raters(request: HttpRequest, pk: int) -> HttpResponse:
    """The owner's page: invite raters, remove them, choose the step and whether the base model plays."""
    experiment = _get_own_experiment(request, pk)
    arena = Arena(experiment)
    setup = RatingSetup.for_experiment(experiment)
    invite_form = InviteForm(experiment=experiment)
    if request.method == "POST":
        invite_form = InviteForm(request.POST, experiment=experiment)
        if invite_form.is_valid():
            do_invite(experiment, invite_form.user, by=request.user)
            messages.success(request, f"Invited {invite_form.user.get_username()}.")
            return redirect("ratings:raters", pk=experiment.pk)
    invitations = (experiment.rating_invitations.select_related("rater")
                   .annotate(n_votes=Count("rater__votes", filter=Q(rater__votes__experiment=experiment))))
    return render(request, "ratings/raters.html", {
        "experiment": experiment, "invite_form": invite_form, "invitations": invitations,
        "setup_form": SetupForm(instance=setup, steps_by_run=arena.steps_by_run), "arena": arena,
        "owner_votes": Vote.objects.filter(experiment=experiment, rater=request.user).count(),
    })


@login_required
@require_POST
def raters_setup(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = _get_own_experiment(request, pk)
    arena = Arena(experiment)
    form = SetupForm(request.POST, instance=RatingSetup.for_experiment(experiment), steps_by_run=arena.steps_by_run)
    if form.is_valid():
        form.save()
        messages.success(request, "Saved. Raters now rate what you chose.")
    else:
        messages.error(request, "Could not save: " + "; ".join(e for errs in form.errors.values() for e in errs))
    return redirect("ratings:raters", pk=experiment.pk)


@login_required
@require_POST
def raters_remove(request: HttpRequest, pk: int, user_id: int) -> HttpResponse:
    """Withdraw an invitation. The rater's votes stay (they were cast in good faith)."""
    experiment = _get_own_experiment(request, pk)
    invitation = get_object_or_404(Invitation.objects.select_related("rater"), experiment=experiment, rater_id=user_id)
    invitation.delete()
    messages.info(request, f"{invitation.rater.get_username()} can no longer rate this experiment.")
    return redirect(reverse("ratings:raters", args=[experiment.pk]))


@login_required
def vote_datasets(request: HttpRequest, pk: int) -> HttpResponse:
    """The owner's page: build a new version of the experiment's vote dataset; the versions so far."""
    experiment = _get_own_experiment(request, pk)
    form = VoteDatasetForm(user=request.user)
    if request.method == "POST":
        form = VoteDatasetForm(request.POST, user=request.user)
        if form.is_valid():
            try:
                built = do_build_vote_dataset(request.user, [experiment, *form.cleaned_data["also"]], form.policy(),
                                              name=form.cleaned_data["name"], judges=form.cleaned_data["judges"])
            except (ValueError, DatasetError) as e:
                messages.error(request, f"No dataset: {e}")
            else:
                messages.success(request, f"Built {built.dataset.name}: {built.dataset.rows} pairs from "
                                          f"{built.votes} votes.")
                return redirect("ratings:vote_datasets", pk=experiment.pk)
    return render(request, "ratings/vote_datasets.html", {
        "experiment": experiment, "form": form, "n_votes": experiment.votes.count(),
        "versions": experiment.vote_datasets.select_related("dataset").prefetch_related("sources"),
    })


@login_required
@require_GET
def vote_dataset_file(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    """A vote dataset as JSONL or Parquet (Hugging Face's preference columns), for whoever may see it."""
    if fmt not in ("jsonl", "parquet"):
        raise Http404("No such format.")
    vote_set = get_object_or_404(VoteDataset.objects.select_related("dataset").filter(
        dataset__in=Dataset.objects.visible_to(request.user)), pk=pk)
    rows = read_rows(DatasetSpec.of(vote_set.dataset.spec())).rows
    name = f"votes-{vote_set.experiment_id}-v{vote_set.version}"
    if fmt == "parquet":
        response = HttpResponse(to_parquet(rows), content_type="application/vnd.apache.parquet")
    else:
        response = HttpResponse(to_jsonl(rows), content_type="application/jsonl; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return response


def _round_form(experiment: Experiment, data=None) -> RoundForm:
    arena = Arena(experiment, include_base=True)
    return RoundForm(data, contestants=[(k, arena.label(k)) for k in pickable(arena)],
                     versions=experiment.vote_datasets.select_related("dataset"))


@login_required
@require_GET
def rounds(request: HttpRequest, pk: int) -> HttpResponse:
    """Round by round: the leaderboard of its contestants, gold reward, KL, the reward model's held-out
    accuracy on votes, and the votes it cost; the owner starts the next one here."""
    experiment = _get_experiment_for_leaderboard(request, pk)
    can_manage = experiment.is_owned_by(request.user)
    return render(request, "ratings/rounds.html", {
        "experiment": experiment, "rounds": rounds_summary(experiment), "can_manage": can_manage,
        "form": _round_form(experiment) if can_manage else None,
    })


@login_required
@require_POST
def start_round(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = _get_own_experiment(request, pk)
    form = _round_form(experiment, request.POST)
    if not form.is_valid():
        messages.error(request, "Could not start: " + "; ".join(e for errs in form.errors.values() for e in errs))
        return redirect("ratings:rounds", pk=experiment.pk)
    try:
        vote_set = (experiment.vote_datasets.get(pk=form.cleaned_data["vote_dataset"])
                    if form.cleaned_data["vote_dataset"] else do_build_vote_dataset(request.user, [experiment], Policy()))
        round_ = do_start_round(experiment, vote_set, picks=form.cleaned_data["picks"] or None,
                                methods=tuple(form.cleaned_data["methods"]), by=request.user)
    except (RoundError, ValueError, DatasetError) as e:
        messages.error(request, f"Could not start the round: {e}")
    else:
        messages.success(request, f"Round {round_.number} started: {round_.runs.count()} runs.")
    return redirect("ratings:rounds", pk=experiment.pk)
