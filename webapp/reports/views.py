"""Report downloads and the import page. Thin: access through webapp.experiments.access (404 for what the
user may not see), the document from report.py, the formats from formats.py."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from webapp.compare.loader import picked_runs
from webapp.experiments.access import experiment_for_user
from webapp.reports import formats
from webapp.reports.forms import ImportForm
from webapp.reports.importing import ReportError, do_import_report
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


@login_required
@require_http_methods(["GET", "POST"])
def import_report(request: HttpRequest) -> HttpResponse:
    form = ImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            experiment = do_import_report(form.cleaned_data["document"], request.user, checked=True)
        except ReportError as exc:
            form.add_error("file", str(exc))
        else:
            messages.success(request, f"Imported \"{experiment.name}\" with {experiment.runs.count()} runs.")
            return redirect(experiment.get_absolute_url())
    return render(request, "reports/import.html", {"form": form})



