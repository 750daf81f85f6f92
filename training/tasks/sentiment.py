"""Positive reviews, scored by VADER's compound sentiment (in [-1, 1]) as the gold reward."""

from __future__ import annotations

from functools import cache

from training.tasks.base import Example, Task, rng_for, text_of

ITEMS = """the hotel|this phone|the movie|that restaurant|the new album|this book|the coffee shop|the laptop|
the concert|this game|the museum|the headphones|this camera|the bakery|the park|this jacket|the train ride|
the pizza|this novel|the play|the gym|the beach|this app|the bike|the tea|the garden|the show|this lamp|
the class|the tour|the car|this chair|the soup|the museum cafe|the website|the podcast|this song|the zoo|
the bookstore|the festival|the printer|the hike|the spa|this desk|the bus|the airline|the market|the library|
the bridge|the stadium|this watch|the island|the lake|the city|the sandwich|the ice cream|the pasta|the salad|
the sofa|the keyboard""".replace("\n", "").split("|")
GOOD = ["great", "wonderful", "amazing", "lovely", "excellent", "fantastic", "delightful"]
BAD = ["terrible", "awful", "horrible", "bad", "disappointing", "boring", "ugly"]


@cache
def _analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_sentiment(completions, **_) -> list[float]:
    return [_analyzer().polarity_scores(text_of(c))["compound"] for c in completions]


class Sentiment(Task):
    name = "sentiment"
    description = "Write a short review; gold reward is VADER's compound sentiment of the completion."
    reward_fns = (vader_sentiment,)

    def examples(self) -> list[Example]:
        rng = rng_for(self.name)
        out = []
        for item in ITEMS:
            good, bad = rng.choice(GOOD), rng.choice(BAD)
            out.append(Example(prompt=f"Write a short review of {item}.",
                               reference=f"{item.capitalize()} was {good}. I loved it!",
                               rejected=f"{item.capitalize()} was {bad}. I hated it."))
        return out
