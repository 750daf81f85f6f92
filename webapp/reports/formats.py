"""The report's formats, each made from the document of `report.build_report`: JSON, CSV (metrics in
long format; votes), Markdown, self-contained HTML (plotly.js inlined, interactive charts) and PDF (the
same page printed by headless Chromium). Figures, tables and the samples grid come from the comparison
core (webapp.compare.core), fed from the document; `FORMATS` lists them for the pages and the API."""

from __future__ import annotations

import csv
import functools
import html
import io
import json
import tempfile
from pathlib import Path

from django.conf import settings
from django.template.loader import render_to_string

from webapp.compare.core import equal_kl, figures, overopt, sweeps, verdicts, view
from webapp.compare.core.series import summarize
from webapp.compare.core.stats import fmt
from webapp.compare.core.view import RunData
from webapp.reports.report import config_table, metric_rows, verdicts_document

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"]
METRIC_COLUMNS = ("experiment", "run", "method", "seed", "step", "name", "value")
VOTE_COLUMNS = ("experiment", "rater", "step", "prompt_id", "first", "second", "sample_index", "left_is_first",
                "outcome", "result", "previous_result", "revisions")


def slug(doc: dict) -> str:
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in doc["experiment"]["name"]).strip("-")
    return f"ptlab-{name or 'experiment'}"[:80]


# --- JSON, CSV, Markdown -------------------------------------------------------------------------------


def to_json(doc: dict) -> bytes:
    return json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False).encode()


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A cell a spreadsheet will not run: text starting like a formula gets a leading single quote
    (numbers stay numbers; None is an empty cell)."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class CsvWriter:
    """csv.writer whose every cell goes through csv_cell: what every CSV of ptlab is written with."""

    def __init__(self, out):
        self._writer = csv.writer(out, lineterminator="\n")

    def writerow(self, row):
        return self._writer.writerow([csv_cell(v) for v in row])

    def writerows(self, rows):
        for row in rows:
            self.writerow(row)


def metrics_csv(doc: dict) -> str:
    out = io.StringIO()
    writer = CsvWriter(out)
    writer.writerow(METRIC_COLUMNS)
    writer.writerows(metric_rows(doc))
    return out.getvalue()


def votes_csv(doc: dict) -> str:
    out = io.StringIO()
    writer = CsvWriter(out)
    writer.writerow(VOTE_COLUMNS)
    name = doc["experiment"]["name"]
    for v in doc["votes"]:
        writer.writerow([name, *(v[c] for c in VOTE_COLUMNS[1:])])
    return out.getvalue()


def _md(text) -> str:
    """Text for a Markdown table or line: HTML escaped (Markdown renderers pass raw HTML through)."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ").replace("`", "'")


UNFINISHED = ("waiting", "queued", "running")


def partial(doc: dict) -> dict | None:
    """When runs had not finished at export: how many, and every run's state; None for a complete report."""
    runs = doc.get("runs") or []
    unfinished = [r for r in runs if r.get("state") in UNFINISHED]
    if not unfinished:
        return None
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.get("state", "?")] = counts.get(r.get("state", "?"), 0) + 1
    return {"unfinished": len(unfinished), "runs": len(runs),
            "states": ", ".join(f"{n} {state}" for state, n in counts.items()),
            "each": [(r.get("label", r.get("key", "?")), r.get("state", "?"), r.get("step"), r.get("total"))
                     for r in runs]}


def to_markdown(doc: dict) -> str:
    """A short summary to paste into a pull request or a paper draft: the methods and the leaderboard."""
    e, summary = doc["experiment"], report_summary(doc)
    lines = [f"### {_md(e['name'])}", "",
             f"Model `{_md(e['base_model'])}`, task `{_md(e['task_label'])}`, {len(doc['runs'])} runs "
             f"({', '.join(_md(m) for m in e['methods'])}; {e['seeds']} seed(s)), {e['max_steps']} steps, "
             f"eval every {e['eval_every']} steps on {e['eval_prompts']} prompts.", ""]
    unfinished = partial(doc)
    if unfinished:
        lines += [f"**Partial**: {unfinished['unfinished']} of {unfinished['runs']} runs had not finished when "
                  f"this was exported ({_md(unfinished['states'])}): " + "; ".join(
                      f"{_md(label)} {_md(state)}" + (f" (step {step} of {total})" if state in UNFINISHED else "")
                      for label, state, step, total in unfinished["each"]) + ".", ""]
    heads = ["Method", "Runs", *(c["label"] for c in summary["columns"])]
    lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for g in summary["groups"]:
        lines.append("| " + " | ".join([_md(g["label"]), str(g["runs"]), *(_md(c) for c in g["cells"])]) + " |")
    lines += ["", "Mean ± 95% CI over seeds."]
    data = run_data(doc)
    flags = overopt.all_flags(data)
    if flags:
        lines += ["", "**Over-optimisation and collapse**", "", *(f"- {_md(f)}" for f in flags)]
    table = report_verdicts(doc)
    if table["rows"]:
        lines += ["", "**Verdicts** (paired bootstrap over the same eval prompts at the final evaluation; "
                      f"Holm-corrected across {table['pairs']} pair(s); detectable: 80% power, α = 0.05)", "",
                  "| Verdict | Difference [95% CI] | p (Holm) | Detectable |", "|---|---|---|---|"]
        for row in table["rows"]:
            lines.append(f"| {_md(row['sentence'])} | {row['difference']} | {row['p_holm']} | {row['detectable']} |")
        if table["underpowered"]:
            lines += ["", f"⚠ {table['underpowered']} observed difference(s) below what the experiment can detect."]
    sweep = doc.get("sweep")
    if sweep:
        lines += ["", f"**Equal tuning budget** (trials chosen on {sweep['validation_prompts']} validation prompts, "
                      f"reported on the other {sweep['test_prompts']})", "",
                  "| Method | Trials | Best trial | Validation | Test |", "|---|---|---|---|---|"]
        for m in sweep["methods"]:
            best = m["best"] or {}
            lines.append(f"| {_md(m['label'])} | {m['completed']} of {m['trials']} | {_md(best.get('label', '–'))} | "
                         f"{fmt(best.get('validation'))} | {fmt(best.get('test'))} |")
        lines += [""] + [f"- {_md(r['sentence'])} (test half)" for r in sweep["verdicts"]["rows"]]
    at_kl = equal_kl.reward_at_equal_kl(data)
    if at_kl["rows"]:
        lines += ["", "**Reward at equal KL** (best eval/reward within each KL budget, nats; mean ± 95% CI over seeds; "
                      "*: budget not all spent)", "",
                  "| Method | " + " | ".join(f"KL ≤ {b}" for b in at_kl["budgets"]) + " |",
                  "|---|" + "---|" * len(at_kl["budgets"])]
        for row in at_kl["rows"]:
            lines.append(f"| {_md(row['label'])} | " + " | ".join(row["texts"]) + " |")
    board = doc["leaderboard"]
    ranked = [r for r in board["rows"] if r["votes"]]
    if ranked:
        lines += ["", f"**Human rating** ({board['votes']} blind pairwise votes at step {board['step']}; "
                      "Bradley-Terry, 95% bootstrap intervals)", "",
                  "| Rank | Model | BT score | 95% interval | Win rate | Votes | eval/reward |", "|---|---|---|---|---|---|---|"]
        for r in ranked:
            reward = "–" if r["reward"] is None else f"{r['reward']:.3f}"
            lines.append(f"| {r['rank']} | {_md(r['label'])} | {r['bt_score']:.0f} | {r['bt_low']:.0f} – "
                         f"{r['bt_high']:.0f} | {r['win_rate']:.2f} | {r['votes']} | {reward} |")
        if board["kendall_tau"] is not None:
            warn = " ⚠ people and the reward disagree" if board["human_reward_disagree"] else ""
            lines += ["", f"Kendall's τ (human ranking vs eval/reward): {board['kendall_tau']:.2f}{warn}"]
    rev = doc["environment"].get("git_revision")
    lines += ["", f"_ptlab report{f' · code {rev[:12]}' if rev else ''}_", ""]
    return "\n".join(lines)


# --- figures and tables from the document --------------------------------------------------------------


def run_data(doc: dict) -> list[RunData]:
    """The comparison core's view of the document's runs (series downsampled as on the page)."""
    return view.style_runs([
        RunData(id=n + 1, label=run["label"], group=run.get("group", run["method"]),
                group_label=run.get("group_label", run["method_label"]), method=run["method"], seed=run["seed"],
                state=run["state"], depends_on=bool(run["depends_on"]),
                series=summarize(doc["metrics"].get(run["key"], [])))
        for n, run in enumerate(doc["runs"])])


def report_summary(doc: dict, data: list[RunData] | None = None) -> dict:
    return view.summary(data if data is not None else run_data(doc))


def report_verdicts(doc: dict) -> dict:
    """The verdicts table of the document (its own `verdicts`, else computed from its samples)."""
    several = len(doc.get("experiments") or []) > 1
    return verdicts.table(doc.get("verdicts") or verdicts_document(doc, several=several))


def samples_grid(doc: dict, data: list[RunData], step: int | None = None) -> dict:
    """The samples grid (core.view.samples_grid) of the document's samples at `step`."""
    samples = {r.id: doc["samples"].get(run["key"], []) for r, run in zip(data, doc["runs"], strict=True)}
    plan = view.grid_plan(data, {rid: sorted({row[0] for row in rows}) for rid, rows in samples.items()}, step)
    rows = ((rid, s, pid, prompt, completion, reward)
            for rid, rows in samples.items() for s, pid, _index, prompt, completion, reward in rows)
    return view.samples_grid(plan, data, rows)


def leaderboard_figures(doc: dict) -> list[dict]:
    from webapp.ratings.figures import pair_votes_figure, win_rate_figure

    board = doc["leaderboard"]
    if not board["votes"]:
        return []
    out = []
    for fid, title, fig in (
            ("win-rate", "Win rate: row against column (ties half)", win_rate_figure(board["labels"], board["win_rate"])),
            ("pair-votes", "Votes per pair", pair_votes_figure(board["labels"], board["pair_votes"]))):
        figure = json.loads(fig.to_json())
        figure["layout"]["title"]["text"] = title
        out.append({"id": fid, "dom": f"fig-{fid}", "figure": figure, "height": figure["layout"].get("height", 420)})
    return out


def plotly_path() -> Path:
    return Path(settings.BASE_DIR) / "static" / "vendor" / "plotly.min.js"


def html_context(doc: dict, *, step: int | None = None, pdf: bool = False) -> dict:
    data = run_data(doc)
    charts = figures.build_figures(data)
    for chart in charts:
        chart["dom"] = f"fig-{chart['id']}"
    board = doc["leaderboard"]
    grid = samples_grid(doc, data, step)
    for p in grid["prompts"]:
        p["rows"] = list(zip(grid["columns"], p["cells"], strict=True))
    ranked = [r for r in board["rows"] if r["votes"]]
    bars = {}
    if ranked:
        lo, hi = min(r["bt_low"] for r in ranked), max(r["bt_high"] for r in ranked)
        span = max(hi - lo, 1e-9) * 1.1
        lo -= 0.05 * span / 1.1
        bars = {r["contestant"]: {"left": round(100 * (r["bt_low"] - lo) / span, 2),
                                  "width": round(max(100 * (r["bt_high"] - r["bt_low"]) / span, 0.8), 2),
                                  "mid": round(100 * (r["bt_score"] - lo) / span, 2)} for r in ranked}
    board = {**board, "rows": [{**r, "bar": bars.get(r["contestant"])} for r in board["rows"]]}
    return {
        "doc": doc, "e": doc["experiment"], "env": doc["environment"], "pdf": pdf, "partial": partial(doc),
        "summary": report_summary(doc, data), "verdicts": report_verdicts(doc), "flags": overopt.all_flags(data),
        "equal_kl": equal_kl.reward_at_equal_kl(data),
        "sweep": sweeps.view(doc["sweep"]) if doc.get("sweep") else None, "charts": charts, "configs": _chunks(config_table(doc), 4 if pdf else 0),
        "grid": grid, "board": board, "ranked": ranked,
        "board_figures": leaderboard_figures(doc), "n_metrics": sum(len(v) for v in doc["metrics"].values()),
        # The PDF's page is printed here: plotly.js from its file (compiled off the main thread, sooner
        # than inline). The HTML report inlines it: it must open anywhere with no network.
        "plotly_js": "" if pdf else plotly_js(), "plotly_src": plotly_path().as_uri() if pdf else "",
    }


def _chunks(table: dict, size: int) -> list[dict]:
    """The config table split into tables of `size` runs (0: one table), so that print stays on the page."""
    n = len(table["runs"])
    size = size or max(n, 1)
    return [{"runs": table["runs"][k:k + size],
             "rows": [{**row, "values": row["values"][k:k + size]} for row in table["rows"]]}
            for k in range(0, max(n, 1), size)]


@functools.cache
def plotly_js() -> str:
    """plotly.js as served by the app (static/vendor), to inline: a report opens with no network."""
    text = plotly_path().read_text(encoding="utf-8")
    return text.replace("</script", "<\\/script")


def to_html(doc: dict, *, step: int | None = None, pdf: bool = False) -> str:
    return render_to_string("reports/report.html", html_context(doc, step=step, pdf=pdf))


# --- PDF -----------------------------------------------------------------------------------------------


FOOTER = ('<div style="font-size:8px;width:100%;padding:0 12mm;color:#667085;display:flex;'
          'justify-content:space-between;font-family:sans-serif"><span>{title}</span>'
          '<span>page <span class="pageNumber"></span> of <span class="totalPages"></span></span></div>')


def to_pdf(doc: dict, *, step: int | None = None, timeout_s: float = 60) -> bytes:
    """A4, printed by headless Chromium from the print layout of the HTML report: the page draws its
    charts as static plots (Plotly's staticPlot: vectors, sharp at any zoom; timings in bench/RESULTS.md),
    then is printed with page numbers in the footer. The page may load nothing but local files."""
    from html import escape

    from playwright.sync_api import sync_playwright

    page_html = to_html(doc, step=step, pdf=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.html"
        path.write_text(page_html, encoding="utf-8")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                # the printable width of A4 with 12 mm margins (186 mm at 96 px/in): charts are drawn at the
                # size they are printed
                page = browser.new_page(viewport={"width": 703, "height": 1000})
                page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                           else route.abort())
                page.goto(path.as_uri())
                page.wait_for_function("window.reportReady === true", timeout=timeout_s * 1000)
                title = escape(f"ptlab · {doc['experiment']['name']}")
                return page.pdf(format="A4", print_background=True, display_header_footer=True,
                                header_template="<span></span>", footer_template=FOOTER.format(title=title),
                                margin={"top": "12mm", "bottom": "16mm", "left": "12mm", "right": "12mm"})
            finally:
                browser.close()


# --- the formats, by the suffix in their URL ---------------------------------------------------------

# fmt -> (content type, file suffix, renderer(doc, step))
FORMATS = {
    "html": ("text/html; charset=utf-8", "html", lambda doc, step: to_html(doc, step=step)),
    "pdf": ("application/pdf", "pdf", lambda doc, step: to_pdf(doc, step=step)),
    "csv": ("text/csv; charset=utf-8", "metrics.csv", lambda doc, step: metrics_csv(doc)),
    "votes.csv": ("text/csv; charset=utf-8", "votes.csv", lambda doc, step: votes_csv(doc)),
    "json": ("application/json", "json", lambda doc, step: to_json(doc)),
    "md": ("text/markdown; charset=utf-8", "md", lambda doc, step: to_markdown(doc)),
}


def render(doc: dict, fmt: str, step: int | None = None) -> tuple[bytes | str, str, str]:
    """The document in format `fmt` (a key of FORMATS): (body, content type, file name)."""
    content_type, suffix, render_as = FORMATS[fmt]
    return render_as(doc, step), content_type, f"{slug(doc)}.{suffix}"
