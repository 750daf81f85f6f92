"""The API's report endpoint (when the reports app is installed): an experiment's report as a download."""

from __future__ import annotations

from django.apps import apps
from django.http import HttpRequest, HttpResponse
from ninja import Path

from webapp.api.errors import not_found
from webapp.api.experiments import experiment_or_404
from webapp.api.ninja_api import ERRORS, api
from webapp.api.params import ID

API_REPORT_FORMATS = ("json", "csv", "votes.csv", "md")  # fast ones; HTML and PDF: the pages' downloads
REPORT_CONTENT = {"200": {"description": "The report", "content": {
    "application/json": {"schema": {"type": "object"}}, "text/csv": {"schema": {"type": "string"}},
    "text/markdown": {"schema": {"type": "string"}}}}}


@api.get("/experiments/{int:id}/report.{fmt}", response={**ERRORS}, url_name="experiment_report",
         operation_id="getReport", summary="The experiment's report as a download (HTML and PDF: see `downloads`)",
         tags=["reports"], openapi_extra={"responses": REPORT_CONTENT})
def experiment_report(request: HttpRequest, fmt: str = Path(..., description=", ".join(API_REPORT_FORMATS)),
                      pk: int = ID):
    """The experiment's report (webapp.reports) as a download: JSON, metrics CSV, votes CSV or Markdown."""
    if not apps.is_installed("webapp.reports") or fmt not in API_REPORT_FORMATS:
        raise not_found("report format")
    exp = experiment_or_404(request, pk)
    from webapp.reports.formats import render
    from webapp.reports.report import build_report

    body, content_type, filename = render(build_report(exp, votes=fmt != "csv"), fmt)
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
