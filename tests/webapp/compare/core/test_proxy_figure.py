"""The proxy-vs-gold chart on plain data: any run that logged eval/proxy_reward (its training signal differed
from the gold one, whether a reward model, a judge or a verifier) is drawn twice, gold solid and proxy dashed."""

from webapp.compare.core.figures.common import Axis
from webapp.compare.core.figures.proxy import proxy_figure
from webapp.compare.core.series import Series
from webapp.compare.core.view import RunData


def run(run_id: int, method: str, **values) -> RunData:
    series = {name.replace("__", "/"): Series().extend((s, v, 1000.0 + s) for s, v in zip((0, 10, 20), vs, strict=True))
              .snapshot() for name, vs in values.items()}
    return RunData(id=run_id, label=f"{method} seed 0", group=method, group_label=method.upper(), method=method,
                   seed=0, series=series)


def test_a_verifier_trained_run_shows_gold_and_proxy_and_a_gold_trained_run_does_not():
    runs = [run(1, "grpo", eval__reward=(0.2, 0.3, 0.25), eval__proxy_reward=(0.2, 0.6, 0.9)),
            run(2, "sft", eval__reward=(0.2, 0.4, 0.5))]
    fig = proxy_figure(runs, Axis("step", runs), weight=0.0)
    traces = [t for t in fig["data"] if t.get("meta", {}).get("kind") in ("run", "proxy")]
    assert [(t["name"], t["line"]["dash"]) for t in traces] == [("grpo seed 0 (gold)", "solid"),
                                                                ("grpo seed 0 (proxy)", "dash")]
    assert traces[1]["y"] == [0.2, 0.6, 0.9] and traces[0]["y"] == [0.2, 0.3, 0.25]
    assert proxy_figure(runs[1:], Axis("step", runs[1:]), weight=0.0) is None  # nothing to show: no chart
