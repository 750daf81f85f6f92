"""Report downloads and the import page. Thin: access as everywhere (404 for experiments the user may
not see), the document from report.build_report, the formats from formats.py."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from webapp.compare.views import _picked_runs
from webapp.experiments.views import _get_experiment_for_user
from webapp.reports import formats
from webapp.reports.forms import ImportForm
from webapp.reports.importing import ReportError, do_import_report
from webapp.reports.report import build_comparison_report, build_report

# fmt in the URL -> (content type, file suffix, renderer(doc, step))
FORMATS = {
    "html": ("text/html; charset=utf-8", "html", lambda doc, step: formats.to_html(doc, step=step)),
    "pdf": ("application/pdf", "pdf", lambda doc, step: formats.to_pdf(doc, step=step)),
    "csv": ("text/csv; charset=utf-8", "metrics.csv", lambda doc, step: formats.metrics_csv(doc)),
    "votes.csv": ("text/csv; charset=utf-8", "votes.csv", lambda doc, step: formats.votes_csv(doc)),
    "json": ("application/json", "json", lambda doc, step: formats.to_json(doc)),
    "md": ("text/markdown; charset=utf-8", "md", lambda doc, step: formats.to_markdown(doc)),
}


def _step(request: HttpRequest) -> int | None:
    try:
        return int(request.GET["step"])
    except (KeyError, ValueError):
        return None


@login_required
@require_GET
def export(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    experiment = _get_experiment_for_user(request, pk)
    if fmt not in FORMATS:
        raise Http404("No such report format.")
    return _download(request, build_report(experiment, votes=fmt != "csv"), fmt)


@login_required
@require_GET
def runs_export(request: HttpRequest, fmt: str) -> HttpResponse:
    """The report of runs picked from any of the user's experiments (`?run=3&run=7`; 404 if any is not
    theirs to see), as on /compare/."""
    if fmt not in FORMATS:
        raise Http404("No such report format.")
    runs = _picked_runs(request)
    if not runs:
        raise Http404("No runs picked.")
    return _download(request, build_comparison_report(runs), fmt)


def _download(request: HttpRequest, doc: dict, fmt: str) -> HttpResponse:
    content_type, suffix, render_as = FORMATS[fmt]
    response = HttpResponse(render_as(doc, _step(request)), content_type=content_type)
    disposition = "inline" if fmt == "md" and request.GET.get("view") else "attachment"
    response["Content-Disposition"] = f'{disposition}; filename="{formats.slug(doc)}.{suffix}"'
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



