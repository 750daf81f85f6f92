"""ptlab's own PPO for language models (TRL 1.16 has none): the standard RLHF recipe of
Huang et al. 2024, "The N Implementation Details of RLHF with PPO".

Each step samples completions, scores them with the run's reward function, folds a per-token KL
penalty against the reference into the rewards, estimates advantages with GAE on a value head that
shares the policy's trunk, and takes `ppo_epochs x num_minibatches` clipped policy + value updates.

The math (`gae`, `masked_whiten`, `policy_loss`, `value_loss`, ...) is pure tensor code, tested on
numbers worked out by hand; `PPOTrainer` does rollouts, updates and checkpoints; `train` is the loop.
"""

from __future__ import annotations

import json
import random
import shutil
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from training import distributed, options
from training.evaluation import completion_mask
from training.methods.common import MethodContext, TrainResult

# --- the math ---------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over the positions where mask is 1 (over `dim`, or over everything)."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased (Bessel-corrected) variance of the unmasked entries."""
    n = mask.sum()
    var = masked_mean((x - masked_mean(x, mask)) ** 2, mask)
    return var * n / (n - 1) if n > 1 else var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit variance over the unmasked entries; masked entries become 0."""
    whitened = (x - masked_mean(x, mask)) * torch.rsqrt(masked_var(x, mask) + eps)
    return whitened * mask


def token_rewards(logp: torch.Tensor, ref_logp: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor,
                  kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef * (logp - ref_logp) everywhere, plus the sequence's score on its last
    completion token. Returns (rewards, per-token KL), both 0 at masked positions."""
    kl = (logp - ref_logp) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(dim=1) - 1).clamp(min=0).long()
    rewards[torch.arange(len(rewards), device=rewards.device), last] += scores.to(rewards.dtype)
    return rewards, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over (batch, time). `mask` is 1 for completion tokens, then 0:
    the episode ends at the last 1, so nothing after it (values of pad tokens) leaks into advantages.
    Returns (advantages, returns = advantages + values), both 0 at masked positions."""
    rewards, values = rewards * mask, values * mask
    steps = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def policy_loss(new_logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                cliprange: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate. Returns (loss, fraction of tokens where clipping bit, approx. KL
    old -> new as 0.5 * mean squared log-ratio), the last two detached."""
    log_ratio = new_logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approxkl = 0.5 * masked_mean(log_ratio.detach() ** 2, mask)
    return loss, clipfrac.detach(), approxkl


def value_loss(new_v: torch.Tensor, old_v: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float) -> torch.Tensor:
    """Clipped value loss: 0.5 * mean of the larger squared error of the new and the clipped value."""
    clipped_v = old_v + torch.clamp(new_v - old_v, -cliprange_value, cliprange_value)
    worst = torch.maximum((new_v - returns) ** 2, (clipped_v - returns) ** 2)
    return 0.5 * masked_mean(worst, mask)


# --- data ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _epoch_order(n_rows: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n_rows))
    random.Random(f"ppo-{seed}-{epoch}").shuffle(order)
    return tuple(order)


def batch_indices(n_rows: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Rows for `step` (1-based): consecutive slices of a fresh seeded shuffle per epoch. A function of
    the step alone, so a resumed run draws the same prompts without saving sampler state."""
    start = (step - 1) * batch_size
    return [_epoch_order(n_rows, seed, pos // n_rows)[pos % n_rows] for pos in range(start, start + batch_size)]


@dataclass
class Rollout:
    """One batch of sampled completions and everything the updates need of it (no grad)."""

    ids: torch.Tensor  # left-padded prompt + completion
    attention: torch.Tensor  # 1 for real prompt tokens and completion tokens up to the first EOS
    width: int  # where completions start
    mask: torch.Tensor  # completion tokens up to and including the first EOS
    logp: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    def part(self, rows: slice) -> Rollout:
        """The rollouts of `rows` (one step's share of a generation batch)."""
        return Rollout(self.ids[rows], self.attention[rows], self.width, self.mask[rows], self.logp[rows],
                       self.values[rows], self.advantages[rows], self.returns[rows])


def forward(model, ids: torch.Tensor, attention: torch.Tensor, width: int, temperature: float,
            value_head: nn.Module | None = None):
    """Per-token log-probs of the completion ids[:, width:] under logits / temperature (the distribution
    they were sampled from), their entropy, and the value head's estimates (None without a head).
    Position ids follow the left padding, as in `training.evaluation.sequence_logprobs`."""
    position_ids = (attention.cumsum(dim=1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=attention, position_ids=position_ids,
                output_hidden_states=value_head is not None)
    logits = out.logits[:, width - 1:-1].float() / temperature
    all_logp = torch.log_softmax(logits, dim=-1)
    logp = all_logp.gather(-1, ids[:, width:].unsqueeze(-1)).squeeze(-1)
    entropy = -(all_logp.exp() * all_logp).sum(dim=-1)
    values = None
    if value_head is not None:
        hidden = out.hidden_states[-1][:, width - 1:-1]
        values = value_head(hidden.float()).squeeze(-1)
    return logp, values, entropy


# --- the trainer --------------------------------------------------------------------------------------


class PPOTrainer:
    def __init__(self, ctx: MethodContext):
        self.ctx, self.cfg, self.device = ctx, ctx.cfg, ctx.device
        self.tok = ctx.tokenizer
        self.policy = ctx.model
        self.is_peft = hasattr(self.policy, "disable_adapter")
        self.reward_fn = ctx.reward_fn or ctx.task.reward_fn()
        torch.manual_seed(self.cfg.seed)
        # Dropout off throughout (Huang et al.): otherwise old and new log-probs differ before any update.
        self.policy.eval()
        if ctx.reference is not None:
            ctx.reference.eval()
        hidden = self.policy.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden, 1).to(self.device)
        nn.init.normal_(self.value_head.weight, std=1 / (hidden + 1) ** 0.5)
        nn.init.zeros_(self.value_head.bias)
        self.params = [p for p in self.policy.parameters() if p.requires_grad] + list(self.value_head.parameters())
        # weight_decay 0 by default like the TRL trainers (HF's default), so methods differ by algorithm alone
        self.optimizer = torch.optim.AdamW(self.params, lr=self.cfg.learning_rate, weight_decay=self.cfg.weight_decay)
        self.scheduler = _scheduler(self.optimizer, self.cfg)
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16)
                         if options.use_bf16(self.cfg, self.device.type, _bf16_supported(self.device))
                         else nullcontext())
        if self.cfg.gradient_checkpointing:
            # HF checkpoints only in train mode: train mode with every dropout at 0 keeps the updates exact
            self.policy.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            for module in self.policy.modules():
                if isinstance(module, nn.Dropout):
                    module.p = 0.0
        self.rows = options.filter_prompts(ctx.task.rl_rows(), self.tok, self.cfg.max_prompt_length)
        # Several processes (DDP): each samples and updates on its share of a step's prompts; DDP averages the
        # gradients. Generation, rollouts' forward passes and the evaluation use the unwrapped modules.
        self.world, self.rank = distributed.world_size(), distributed.rank()
        self.train_policy, self.train_value_head = self.policy, self.value_head
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_policy = DDP(self.policy, device_ids=ids)
            self.train_value_head = DDP(self.value_head, device_ids=ids)
        self._pending: dict[int, tuple[Rollout, dict[str, float]]] = {}  # rollouts sampled for later steps
        self.num_tokens = 0  # prompt + completion tokens processed, cumulative like TRL's `num_tokens`
        self.prompt_ids = [self._encode(row["prompt"]) for row in self.rows]

    def _encode(self, messages) -> list[int]:
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tok(text, add_special_tokens=False)["input_ids"]

    # rollouts

    def step(self, step: int) -> dict[str, float]:
        """One PPO step: sample, score, estimate advantages, update. Returns the step's metrics.
        With generation_steps = G, the rollouts of G steps are sampled in one batch at the first of them
        (or at a resumed step), and each step then updates on its own share, once."""
        if step not in self._pending:
            self._pending = self.rollouts_for(step)
        rollout, stats = self._pending.pop(step)
        stats["lr"] = self.optimizer.param_groups[0]["lr"]
        stats.update(self.update(rollout))
        self.scheduler.step()
        return stats

    def rollouts_for(self, step: int) -> dict[int, tuple[Rollout, dict[str, float]]]:
        """Rollouts for `step` up to the end of its generation batch (never past max_steps), by step."""
        cfg, g = self.cfg, self.cfg.generation_steps
        last = min(((step - 1) // g + 1) * g, cfg.max_steps)
        steps = list(range(step, last + 1))
        n = cfg.batch_size // self.world  # this process's share of each step
        indices = [i for s in steps
                   for i in batch_indices(len(self.rows), cfg.batch_size, s, cfg.seed)[self.rank * n:(self.rank + 1) * n]]
        rollout, stats = self.rollout(indices)
        stats = distributed.mean(stats)
        stats["num_tokens"] *= self.world  # every process's tokens
        return {s: (rollout.part(slice(k * n, (k + 1) * n)), dict(stats)) for k, s in enumerate(steps)}

    @torch.no_grad()
    def rollout(self, indices: list[int]) -> tuple[Rollout, dict[str, float]]:
        cfg = self.cfg
        rows = [self.rows[i] for i in indices]
        ids, attention, width, mask = self._generate([self.prompt_ids[i] for i in indices])
        with self.autocast:
            logp, values = self._chunked(lambda sl: forward(self.policy, ids[sl], attention[sl], width,
                                                            cfg.temperature, self.value_head)[:2], len(ids))
            with self._reference() as ref:
                (ref_logp,) = self._chunked(lambda sl: forward(ref, ids[sl], attention[sl], width,
                                                               cfg.temperature)[:1], len(ids))
        scores = torch.tensor(self._score(rows, ids[:, width:], mask), dtype=torch.float32, device=self.device)
        rewards, kl = token_rewards(logp, ref_logp, scores, mask, cfg.kl_coef)
        advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:  # per step's share, as when each step samples its own
            n = cfg.batch_size // self.world
            advantages = torch.cat([masked_whiten(advantages[i:i + n], mask[i:i + n])
                                    for i in range(0, len(ids), n)])
        non_score = (-cfg.kl_coef * kl).sum(dim=1).mean()
        self.num_tokens += int(attention.sum().item())
        stats = {
            "objective/kl": kl.sum(dim=1).mean().item(),
            "objective/scores": scores.mean().item(),
            "objective/non_score_reward": non_score.item(),
            "objective/rlhf_reward": (scores.mean() + non_score).item(),
            "val/mean": masked_mean(values, mask).item(),
            "completions/mean_length": mask.sum(dim=1).float().mean().item(),
            "num_tokens": float(self.num_tokens),
        }
        return Rollout(ids, attention, width, mask, logp, values * mask, advantages, returns), stats

    def _generate(self, prompts: list[list[int]]):
        pad, eos = self.tok.pad_token_id, self.tok.eos_token_id
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        prompt_attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        out = self.policy.generate(input_ids=ids, attention_mask=prompt_attention, do_sample=True,
                                   temperature=self.cfg.temperature, top_k=0, top_p=1.0,
                                   max_new_tokens=options.completion_length(self.cfg), eos_token_id=eos,
                                   pad_token_id=pad)
        mask = completion_mask(out[:, width:], eos)
        return out, torch.cat([prompt_attention, mask], dim=1), width, mask

    def _chunked(self, fn, n: int) -> list[torch.Tensor]:
        """Run fn over micro-batch-sized slices and concatenate: bounds the memory of full-vocab logits."""
        size = self.cfg.batch_size // self.world // self.cfg.num_minibatches // self.cfg.gradient_accumulation_steps
        parts = [fn(slice(i, i + size)) for i in range(0, n, size)]
        return [torch.cat(col) for col in zip(*parts, strict=True)]

    def _reference(self):
        if self.is_peft:
            return _AdaptersOff(self.policy)
        return nullcontext(self.ctx.reference)

    def _score(self, rows: list[dict], completion_ids: torch.Tensor, mask: torch.Tensor) -> list[float]:
        texts = [self.tok.decode(c[m.bool()], skip_special_tokens=True)
                 for c, m in zip(completion_ids, mask, strict=True)]
        columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
        # the same keywords TRL's GRPO/RLOO pass, so one reward function serves every online method
        scores = self.reward_fn(prompts=[r["prompt"] for r in rows], completions=texts, **columns)
        return [float(s) for s in scores]

    # updates

    def update(self, r: Rollout) -> dict[str, float]:
        cfg = self.cfg
        n = len(r.ids)
        logs = defaultdict(list)
        accum = cfg.gradient_accumulation_steps
        with self._updating():
            for _ in range(cfg.ppo_epochs):
                for idx in torch.randperm(n).to(self.device).split(n // cfg.num_minibatches):
                    self.optimizer.zero_grad(set_to_none=True)
                    for micro in idx.split(len(idx) // accum):  # gradient accumulation: one step a minibatch
                        with self.autocast:
                            logp, values, entropy = forward(self.train_policy, r.ids[micro], r.attention[micro],
                                                            r.width, cfg.temperature, self.train_value_head)
                        mask = r.mask[micro]
                        pg_loss, clipfrac, approxkl = policy_loss(logp, r.logp[micro], r.advantages[micro], mask,
                                                                  cfg.cliprange)
                        vf_loss = value_loss(values, r.values[micro], r.returns[micro], mask, cfg.cliprange_value)
                        loss = pg_loss + cfg.vf_coef * vf_loss
                        (loss / accum).backward()
                        for key, value in (("loss/policy", pg_loss), ("loss/value", vf_loss), ("loss/total", loss),
                                           ("policy/clipfrac", clipfrac), ("policy/approxkl", approxkl),
                                           ("policy/entropy", masked_mean(entropy.detach(), mask))):
                            logs[key].append(value.item())
                    if cfg.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                    self.optimizer.step()
        return distributed.mean({k: sum(v) / len(v) for k, v in logs.items()})

    def _updating(self):
        """Train mode for the updates only where gradient checkpointing needs it (dropout is 0 then)."""
        if not self.cfg.gradient_checkpointing:
            return nullcontext()
        return _TrainMode(self.policy)

    # checkpoints

    def save(self, step: int) -> Path | None:
        """Write checkpoint-{step} in this attempt's folder, then publish it (a rename) next to the others,
        which keeps the last few. None when the run was taken away from this attempt (nothing published)."""
        tmp = self.ctx.write_dir / f"checkpoint-{step}"
        if distributed.is_main():
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        distributed.barrier()
        if self.world > 1:  # each process's own random state; the rest is the same on every process
            torch.save(_rng_state(), tmp / f"rng_state_{self.rank}.pt")
            if not distributed.is_main():
                return self.ctx.checkpoint_dir / tmp.name if self.ctx.hooks.publish_checkpoint(
                    tmp, self.ctx.checkpoint_dir) else None
        if self.is_peft:
            self.policy.save_pretrained(tmp)
        else:
            torch.save(self.policy.state_dict(), tmp / "policy.pt")
        torch.save(self.value_head.state_dict(), tmp / "value_head.pt")
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(_rng_state(), tmp / "rng_state.pt")
        (tmp / "run_config.json").write_text(self.cfg.to_json())
        (tmp / "trainer_state.json").write_text(json.dumps({"global_step": step, "num_tokens": self.num_tokens}))
        if not self.ctx.hooks.publish_checkpoint(tmp, self.ctx.checkpoint_dir):
            return None
        return self.ctx.checkpoint_dir / tmp.name

    def restore(self, folder: str | Path) -> int:
        """Load everything `save` wrote; returns the checkpoint's step."""
        folder = Path(folder)
        if self.is_peft:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(self.policy, load_file(folder / "adapter_model.safetensors",
                                                             device=str(self.device)))
        else:
            self.policy.load_state_dict(torch.load(folder / "policy.pt", map_location=self.device))
        self.value_head.load_state_dict(torch.load(folder / "value_head.pt", map_location=self.device))
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=self.device))
        if (folder / "scheduler.pt").is_file():  # checkpoints from before schedules had none (constant)
            self.scheduler.load_state_dict(torch.load(folder / "scheduler.pt"))
        rng = folder / f"rng_state_{self.rank}.pt"
        rng = rng if self.world > 1 and rng.is_file() else folder / "rng_state.pt"
        _set_rng_state(torch.load(rng, map_location="cpu"))  # RNG states live on the CPU
        state = json.loads((folder / "trainer_state.json").read_text())
        self.num_tokens = state.get("num_tokens", 0)
        return state["global_step"]


class _TrainMode:
    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.model.train()
        return self.model

    def __exit__(self, *exc):
        self.model.eval()


def _scheduler(optimizer, cfg):
    """The learning-rate schedule over PPO steps (each step is one scheduler step), with its warmup."""
    from transformers import get_scheduler

    name = "constant_with_warmup" if cfg.lr_scheduler == "constant" and cfg.warmup_steps else cfg.lr_scheduler
    return get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.max_steps)


def _bf16_supported(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


class _AdaptersOff:
    """The PEFT policy with its adapters disabled: the reference, without a second copy of the model."""

    def __init__(self, model):
        self.model = model
        self._ctx = model.disable_adapter()

    def __enter__(self):
        self._ctx.__enter__()
        return self.model

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- the loop -----------------------------------------------------------------------------------------


def train(ctx: MethodContext) -> TrainResult:
    """Steps 1..max_steps (step 0 is the runner's initial evaluation), resuming after ctx.resume_from."""
    cfg = ctx.cfg
    trainer = PPOTrainer(ctx)
    start = trainer.restore(ctx.resume_from) + 1 if ctx.resume_from else 1
    step = start - 1  # the last step taken
    for step in range(start, cfg.max_steps + 1):
        ctx.hooks.on_log(step, trainer.step(step))
        stop = ctx.hooks.on_step_end(step, trainer.policy)  # evaluates on schedule, relays stop requests
        if cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or stop) and not ctx.hooks.lost:
            trainer.save(step)  # also on a stop, as the TRL methods do: the run can be resumed from there
        if stop:
            break
    return TrainResult(model=trainer.policy, step=step)
