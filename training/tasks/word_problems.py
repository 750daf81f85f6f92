"""Multi-step word problems with a numeric answer: generated deterministically from templates (no download).
SFT demonstrations show the working and end with '#### n'; each rejected answer makes one plausible mistake
(a wrong operation order, a skipped step, an arithmetic slip) and carries it through to a wrong total. The
gold reward is the numeric_match verifier on the answer number."""

from __future__ import annotations

from collections.abc import Callable

from training.tasks.base import Example, Task, rng_for

NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena", "Mo",
         "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq")


def _work(steps: list[tuple[str, int]]) -> str:
    return "\n".join(line for line, _ in steps) + f"\n#### {steps[-1][1]}"


def buy_and_give(rng, name):
    a, b, c, d = rng.randint(2, 20), rng.randint(2, 6), rng.randint(2, 9), rng.randint(1, 9)
    q = (f"{name} has {a} apples. {name} buys {b} bags with {c} apples in each, then gives away {d} apples. "
         "How many apples does " + name + " have now?")
    right = [(f"{b} bags of {c} apples: {b} * {c} = {b * c}.", b * c),
             (f"With the {a} from before: {a} + {b * c} = {a + b * c}.", a + b * c),
             (f"After giving away {d}: {a + b * c} - {d} = {a + b * c - d}.", a + b * c - d)]
    if rng.random() < 0.5:  # adds the bags instead of multiplying
        wrong = [(f"{b} bags of {c} apples: {b} + {c} = {b + c}.", b + c),
                 (f"With the {a} from before: {a} + {b + c} = {a + b + c}.", a + b + c),
                 (f"After giving away {d}: {a + b + c} - {d} = {a + b + c - d}.", a + b + c - d)]
    else:  # forgets the apples given away
        wrong = right[:2]
    return q, right, wrong


def speed(rng, name):
    v, t1, t2 = rng.randint(3, 12), rng.randint(2, 5), rng.randint(1, 4)
    q = (f"{name} cycles at {v} km per hour for {t1} hours, rests, then cycles {t2} more hours at the same speed. "
         "How many km does " + name + " cycle in total?")
    right = [(f"First part: {v} * {t1} = {v * t1} km.", v * t1),
             (f"Second part: {v} * {t2} = {v * t2} km.", v * t2),
             (f"Total: {v * t1} + {v * t2} = {v * (t1 + t2)} km.", v * (t1 + t2))]
    slip = v * t2 + rng.choice([-2, -1, 1, 2])  # a slip in the second product, carried to the total
    wrong = [right[0], (f"Second part: {v} * {t2} = {slip} km.", slip),
             (f"Total: {v * t1} + {slip} = {v * t1 + slip} km.", v * t1 + slip)]
    return q, right, wrong


def shares(rng, name):
    k, per, extra = rng.randint(2, 6), rng.randint(2, 8), rng.randint(1, 9)
    total = k * per + extra
    q = (f"{name} has {total} stickers, keeps {extra} and shares the rest equally among {k} friends. "
         "How many stickers does each friend get?")
    right = [(f"Stickers to share: {total} - {extra} = {k * per}.", k * per),
             (f"Each friend: {k * per} / {k} = {per}.", per)]
    naive = round(total / k, 2)  # shares all the stickers, forgetting the ones kept
    naive = int(naive) if naive == int(naive) else naive
    wrong = [(f"Each friend: {total} / {k} = {naive}.", naive)]
    return q, right, wrong


def savings(rng, name):
    start, weekly, weeks, cost = rng.randint(5, 40), rng.randint(3, 15), rng.randint(2, 8), rng.randint(5, 30)
    q = (f"{name} has {start} dollars, saves {weekly} dollars a week for {weeks} weeks, then spends {cost} dollars "
         "on a book. How many dollars are left?")
    saved = weekly * weeks
    right = [(f"Saved: {weekly} * {weeks} = {saved}.", saved),
             (f"Together: {start} + {saved} = {start + saved}.", start + saved),
             (f"After the book: {start + saved} - {cost} = {start + saved - cost}.", start + saved - cost)]
    wrong = [(f"Saved: {weekly} * {weeks} = {saved}.", saved),  # forgets the starting money
             (f"After the book: {saved} - {cost} = {saved - cost}.", saved - cost)]
    return q, right, wrong


TEMPLATES: tuple[Callable, ...] = (buy_and_give, speed, shares, savings)


def numeric_answer(completions, answer, **_) -> list[float]:
    """1 when the completion's answer number ('#### n', \\boxed{n}, else the last number) is right."""
    from training.rewards.verifiers import NumericMatch

    return NumericMatch()(completions, answer=answer)


class WordProblems(Task):
    name = "word_problems"
    description = ("Multi-step word problems (2-3 steps); SFT demos show the working, rejected answers make one "
                   "plausible mistake; reward 1 for the right final number.")
    reward_fns = (numeric_answer,)
    size = 400

    def examples(self) -> list[Example]:
        rng = rng_for(self.name)
        out, seen = [], set()
        while len(out) < self.size:
            template = TEMPLATES[len(out) % len(TEMPLATES)]
            q, right, wrong = template(rng, rng.choice(NAMES))
            if q in seen or wrong[-1][1] == right[-1][1]:
                continue  # a prompt once; a "mistake" that lands on the right total is no mistake
            seen.add(q)
            out.append(Example(prompt=q, reference=_work(right), rejected=_work(wrong),
                               columns={"answer": str(right[-1][1])}))
        return out
