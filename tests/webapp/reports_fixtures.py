"""An experiment to report on: 8 finished runs (4 methods x 2 seeds) with synthetic metrics and samples,
votes by two raters, and model output that tries to inject markup. Shared by the report tests and the
benchmark."""

from __future__ import annotations

from webapp.compare.demo import fill_experiment
from webapp.experiments.actions import do_create_experiment
from webapp.experiments.models import Experiment, Sample
from webapp.ratings.demo import simulate_votes

XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
METHODS = ["sft", "dpo", "grpo", "ppo"]


def make_report_experiment(owner, raters, *, steps: int = 60, eval_every: int = 20, prompts: int = 4,
                           votes: int = 40, name: str = "Report <demo>") -> Experiment:
    exp = do_create_experiment(Experiment(
        owner=owner, name=name, base_model="tiny", task="arithmetic", methods=METHODS, seeds=2, max_steps=steps,
        eval_every=eval_every, eval_prompts=prompts, eval_samples=1, max_new_tokens=16, rl_from_sft=False,
        queue="train", hyperparams={"dpo": {"beta": 0.1}, "ppo": {"kl_coef": 0.05}}))
    fill_experiment(exp, steps=steps, eval_every=eval_every, prompts=prompts, per_prompt=1)
    first = Sample.objects.filter(run__experiment=exp, step=steps).order_by("id").first()
    first.completion = XSS
    first.save(update_fields=["completion"])
    simulate_votes(exp, raters, votes)
    return exp
