"""The ready example a first-time user starts from, and what a browser posts for it."""

from __future__ import annotations

from webapp.experiments.forms.experiment import ExperimentForm
from webapp.experiments.methods import COMPARED

# The ready example for a first-time user: finishes in a few minutes on a 2-core CPU, and the methods end up
# visibly different (SFT learns the format; the RL methods then move reward and KL). The per-method settings
# are the science check's (bench/RESULTS.md): plain DPO at its default learning rate collapses on this task,
# so the example adds the SFT term; 20 prompts x 8 samples keep one eval/reward point within ~0.03.
EXAMPLE = {
    "name": "Arithmetic: SFT, then DPO, PPO, GRPO and RLOO from the SFT model",
    "base_model": "tiny", "task": "arithmetic", "methods": list(COMPARED), "seeds": 1, "max_steps": 100,
    "eval_every": 20, "eval_prompts": 20, "eval_samples": 8, "max_new_tokens": 8, "rl_from_sft": True,
    "queue": "train",
    "sft-max_steps": 300, "sft-batch_size": 16,
    "dpo-learning_rate": 5e-5, "dpo-sft_weight": 1.0, "dpo-batch_size": 16,
    "ppo-learning_rate": 1e-4, "ppo-kl_coef": 0.02, "ppo-batch_size": 16,
    "grpo-learning_rate": 1e-4, "grpo-beta": 0.02, "grpo-batch_size": 32,
    "rloo-learning_rate": 1e-4, "rloo-beta": 0.02, "rloo-batch_size": 32,
}


def example_post_data() -> dict:
    """What a browser posts when the prefilled example is submitted as it is."""
    form = ExperimentForm(initial=EXAMPLE, user=None)
    data = {}
    for name in form.fields:
        value = form[name].value()
        if value is None or value is False:
            continue  # unchecked checkboxes and empty fields are absent from a browser's POST
        data[name] = "on" if value is True else value
    return data
