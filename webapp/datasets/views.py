"""Pages of the datasets app: list, add (upload or server path), preview with the mapping form, sharing is
the owner's. Another user's dataset answers 404, like experiments."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_POST

from training.methods import MAX_SEQUENCE_TOKENS
from training.models import ModelLoadError, load_tokenizer
from training.rewards import describe
from training.tasks import BUILTIN_TASKS, DatasetError
from webapp.datasets.actions import load
from webapp.datasets.figures import length_figure, length_info
from webapp.datasets.forms import DatasetForm, MappingForm
from webapp.datasets.jobs import do_create_upload_job, do_run_upload_job, runs_inline
from webapp.datasets.models import Dataset, UploadJob
from webapp.datasets.preview import build_preview
from webapp.datasets.uploads import SizeLimitHandler, max_upload_bytes
from webapp.experiments.references import ModelReferenceError, check_model_reference, model_path

PREVIEW_MODELS = ("tiny", "demo")


def dataset_for_user(request: HttpRequest, pk: int, *, write: bool = False) -> Dataset:
    """The dataset if the user owns it (or, to read, it is shared with them); 404 otherwise."""
    dataset = get_object_or_404(Dataset.objects.visible_to(request.user).select_related("owner"), pk=pk)
    if write and not dataset.is_owned_by(request.user):
        raise Http404("No Dataset matches the given query.")
    return dataset


def preview_model(value: str, user) -> str:
    """The model whose tokenizer the preview uses: any model the user may name as a base model (built-ins, hub
    ids, run:<id> of a run they can see, folders under the data roots); anything else falls back to tiny."""
    try:
        return check_model_reference(value or "tiny", user)
    except ModelReferenceError:
        return "tiny"


@login_required
@require_GET
def dataset_list(request: HttpRequest) -> HttpResponse:
    datasets = Dataset.objects.visible_to(request.user).select_related("owner")
    builtin = [{"name": t.name, "description": t.description, "train": len(t.split()[0]), "eval": len(t.split()[1])}
               for t in BUILTIN_TASKS.values()]
    return render(request, "datasets/dataset_list.html", {"datasets": datasets, "builtin": builtin})


@login_required
@require_GET
def signal_list(request: HttpRequest) -> HttpResponse:
    """Every reward signal the workers offer (built-in and administrators' plugins) with its parameters."""
    return render(request, "datasets/signal_list.html", {"signals": describe()})


@csrf_exempt  # the upload handler must be in place before the body is read; CSRF is checked just below
@login_required
def dataset_new(request: HttpRequest) -> HttpResponse:
    limiter = SizeLimitHandler(request)
    request.upload_handlers.insert(0, limiter)
    return _dataset_new(request, limiter)


@csrf_protect
def _dataset_new(request: HttpRequest, limiter: SizeLimitHandler) -> HttpResponse:
    if request.method == "POST":
        form = DatasetForm(request.POST, request.FILES, too_big=limiter.too_big)
        if form.is_valid() and (upload := form.cleaned_data.get("file")):  # checked as a job (webapp.datasets.jobs)
            inline = runs_inline(upload)
            job = do_create_upload_job(request.user, form.cleaned_data["name"], form.cleaned_data.get("split"),
                                       upload, send=not inline)
            if not inline:
                return redirect(job)
            if do_run_upload_job(job.pk) == UploadJob.State.DONE:
                job.refresh_from_db()
                messages.success(request, f"Saved {job.dataset.rows} rows; check the column mapping below.")
                return redirect(job.dataset)
            form.add_error("file", UploadJob.objects.get(pk=job.pk).message)
        elif form.is_valid() and (dataset := form.save(owner=request.user)) is not None:  # a server path
            messages.success(request, f"Saved {dataset.rows} rows; check the column mapping below.")
            return redirect(dataset)
    else:
        form = DatasetForm()
    return render(request, "datasets/dataset_form.html", {"form": form, "max_mb": max_upload_bytes() // 2**20})


@login_required
@require_GET
def upload_job(request: HttpRequest, pk: int) -> HttpResponse:
    """The page of an upload being checked by a worker; its JSON (Accept: application/json) for polling."""
    job = get_object_or_404(UploadJob.objects.select_related("dataset"), pk=pk, owner=request.user)
    if request.headers.get("Accept", "").startswith("application/json"):
        return JsonResponse(job.status())
    return render(request, "datasets/upload_job.html", {"job": job})


@login_required
@require_GET
def dataset_detail(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = dataset_for_user(request, pk)
    return _detail(request, dataset, MappingForm(dataset=dataset))


def _detail(request: HttpRequest, dataset: Dataset, form: MappingForm, status: int = 200) -> HttpResponse:
    model = preview_model(request.GET.get("model", "tiny"), request.user)
    try:
        limit = max(1, min(int(request.GET.get("max_tokens", MAX_SEQUENCE_TOKENS)), 1_000_000))
    except ValueError:
        limit = MAX_SEQUENCE_TOKENS
    context = {"dataset": dataset, "form": form, "model": model, "models": PREVIEW_MODELS, "limit": limit,
               "run_limit": MAX_SEQUENCE_TOKENS,
               "methods": dataset.methods(), "can_edit": dataset.is_owned_by(request.user), "error": ""}
    try:
        task = load(dataset)
        try:
            tokenizer = load_tokenizer(model_path(model))
        except (ModelLoadError, OSError, ValueError):  # the server's paths are not shown
            raise ModelLoadError(f"Could not load the tokenizer of {model}; try tiny or demo.") from None
        preview = build_preview(task, tokenizer)
        info = length_info(preview.lengths, limit)
        context.update(preview=preview, info=info, figure=length_figure(info))
    except (DatasetError, ModelLoadError, RuntimeError) as e:
        context["error"] = str(e)
    return render(request, "datasets/dataset_detail.html", context, status=status)


@login_required
@require_POST
def dataset_mapping(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = dataset_for_user(request, pk, write=True)
    form = MappingForm(request.POST, dataset=dataset)
    if form.is_valid() and form.save():
        messages.success(request, "Mapping saved.")
        return redirect(dataset)
    dataset.refresh_from_db()
    return _detail(request, dataset, form, status=400)
