"""Report downloads and the import page. Thin: access through webapp.experiments.access (404 for what the
user may not see), the document from report.py, the formats from formats.py."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods

from webapp.compare.loader import picked_runs
from webapp.datasets.uploads import SizeLimitHandler
from webapp.experiments.access import experiment_for_user
from webapp.reports import formats
from webapp.reports.forms import ImportForm
from webapp.reports.jobs import do_create_import_job
from webapp.reports.models import ImportJob
from webapp.reports.report import build_comparison_report, build_report


def _step(request: HttpRequest) -> int | None:
    try:
        return int(request.GET["step"])
    except (KeyError, ValueError):
        return None


@login_required
@require_GET
def export(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    experiment = experiment_for_user(request.user, pk)
    if fmt not in formats.FORMATS:
        raise Http404("No such report format.")
    return _download(request, build_report(experiment, votes=fmt != "csv"), fmt)


@login_required
@require_GET
def runs_export(request: HttpRequest, fmt: str) -> HttpResponse:
    """The report of runs picked from any of the user's experiments (`?run=3&run=7`; 404 if any is not
    theirs to see), as on /compare/."""
    if fmt not in formats.FORMATS:
        raise Http404("No such report format.")
    runs = picked_runs(request.user, request.GET.getlist("run"))
    if not runs:
        raise Http404("No runs picked.")
    return _download(request, build_comparison_report(runs), fmt)


def _download(request: HttpRequest, doc: dict, fmt: str) -> HttpResponse:
    body, content_type, filename = formats.render(doc, fmt, _step(request))
    response = HttpResponse(body, content_type=content_type)
    disposition = "inline" if fmt == "md" and request.GET.get("view") else "attachment"
    response["Content-Disposition"] = f'{disposition}; filename="{filename}"'
    return response


class ImportSizeLimit(SizeLimitHandler):
    """Stops a report's upload past PTLAB_MAX_IMPORT_BYTES, before the rest of it is received."""

    def __init__(self, request=None):
        super().__init__(request)
        self.limit = settings.PTLAB_MAX_IMPORT_BYTES


@csrf_exempt  # the upload handler must be in place before the body is read; CSRF is checked just below
@login_required
def import_report(request: HttpRequest) -> HttpResponse:
    limiter = ImportSizeLimit(request)
    request.upload_handlers.insert(0, limiter)
    return _import_report(request, limiter)


@csrf_protect
@require_http_methods(["GET", "POST"])
def _import_report(request: HttpRequest, limiter: ImportSizeLimit) -> HttpResponse:
    """The file is stored with a queued job; a worker imports it and the job's page follows it."""
    if request.method == "POST":
        form = ImportForm(request.POST, request.FILES, too_big=limiter.too_big)
        if form.is_valid():
            job = do_create_import_job(request.user, form.cleaned_data["file"])
            return redirect(job)
    else:
        form = ImportForm()
    return render(request, "reports/import.html", {"form": form})


def _job_for_user(request: HttpRequest, pk: int) -> ImportJob:
    return get_object_or_404(ImportJob.objects.select_related("experiment"), pk=pk, owner=request.user)


@login_required
@require_GET
def import_job(request: HttpRequest, pk: int) -> HttpResponse:
    job = _job_for_user(request, pk)
    if request.headers.get("Accept", "").startswith("application/json"):
        return JsonResponse(job.status())
    return render(request, "reports/import_job.html", {"job": job})
