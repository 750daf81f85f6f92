"""The methods an experiment can compare are one list (webapp.experiments.methods), each a method the
training core knows, with a label and a colour."""

import re

from training.config import METHODS as TRAINING_METHODS
from training.methods import DESCRIPTIONS
from webapp.experiments.methods import CATALOG, METHOD_COLORS, METHOD_LABELS, METHODS, method_label


def test_every_method_is_one_the_training_core_runs():
    assert set(METHODS) <= set(TRAINING_METHODS) and set(METHODS) <= set(DESCRIPTIONS)
    assert len(set(METHODS)) == len(METHODS) == len(CATALOG)


def test_every_method_has_a_label_and_a_colour_of_its_own():
    assert list(METHOD_LABELS) == list(METHOD_COLORS) == list(METHODS)
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in METHOD_COLORS.values())
    assert len(set(METHOD_COLORS.values())) == len(METHODS)
    assert method_label("dpo") == "DPO" and method_label("kto") == "kto"  # an imported report's unknown method
