"""Answer in a given JSON shape; rule-checked: the shape, and the echoed field."""

from __future__ import annotations

import json

from training.tasks.base import Example, Task, rng_for, text_of

CAPITALS = dict(pair.split(":") for pair in """France:Paris|Spain:Madrid|Italy:Rome|Germany:Berlin|
Portugal:Lisbon|Poland:Warsaw|Austria:Vienna|Greece:Athens|Norway:Oslo|Sweden:Stockholm|Finland:Helsinki|
Denmark:Copenhagen|Ireland:Dublin|Belgium:Brussels|Hungary:Budapest|Czechia:Prague|Romania:Bucharest|
Bulgaria:Sofia|Croatia:Zagreb|Serbia:Belgrade|Egypt:Cairo|Kenya:Nairobi|Ghana:Accra|Nigeria:Abuja|
Morocco:Rabat|Peru:Lima|Chile:Santiago|Cuba:Havana|Japan:Tokyo|China:Beijing|India:Delhi|Iran:Tehran|
Iraq:Baghdad|Syria:Damascus|Turkey:Ankara|Russia:Moscow|Ukraine:Kyiv|Canada:Ottawa|Mexico:Mexico City|
Brazil:Brasilia|Argentina:Buenos Aires|Colombia:Bogota|Thailand:Bangkok|Vietnam:Hanoi|Nepal:Kathmandu|
Qatar:Doha|Oman:Muscat|Jordan:Amman|Latvia:Riga|Estonia:Tallinn|Iceland:Reykjavik|Malta:Valletta|
Cyprus:Nicosia|Mongolia:Ulaanbaatar|Fiji:Suva|Samoa:Apia|Tonga:Nukualofa|Laos:Vientiane|Chad:Ndjamena|
Mali:Bamako""".replace("\n", "").split("|"))
KEYS = ("country", "capital")


def _parse(completion) -> dict | None:
    try:
        value = json.loads(text_of(completion).strip())
    except (json.JSONDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def json_shape(completions, **_) -> list[float]:
    """1 for a JSON object with exactly the keys country and capital, 0.5 for another JSON object."""
    out = []
    for c in completions:
        obj = _parse(c)
        out.append(0.0 if obj is None else 1.0 if set(obj) == set(KEYS) else 0.5)
    return out


def country_echo(completions, country, **_) -> list[float]:
    """1 when the object's country field repeats the country asked about."""
    return [1.0 if (obj := _parse(c)) is not None and obj.get("country") == want else 0.0
            for c, want in zip(completions, country, strict=True)]


class Format(Task):
    name = "format"
    description = 'Reply as JSON {"country": ..., "capital": ...}; rule-checked shape and echoed field.'
    reward_fns = (json_shape, country_echo)

    def examples(self) -> list[Example]:
        rng = rng_for(self.name)
        out = []
        for country, capital in CAPITALS.items():
            good = json.dumps({"country": country, "capital": capital})
            bad = rng.choice([f"The capital of {country} is {capital}.", json.dumps({"city": capital})])
            out.append(Example(prompt=f"Give the capital of {country} as JSON with keys country and capital.",
                               reference=good, rejected=bad, columns={"country": country}))
        return out
