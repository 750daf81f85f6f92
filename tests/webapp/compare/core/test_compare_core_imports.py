"""The comparison core imports neither Django nor Plotly: it is imported here, every module of it, in a
fresh interpreter where `webapp` is a bare package (its __init__ would start Celery and Django's settings)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
PROBE = """
import importlib, json, pkgutil, sys, types
webapp = types.ModuleType("webapp")
webapp.__path__ = [sys.argv[1] + "/webapp"]
sys.modules["webapp"] = webapp
import webapp.compare.core as core
names = [m.name for m in pkgutil.walk_packages(core.__path__, "webapp.compare.core.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "loaded": sorted(sys.modules)}))
"""


def test_the_core_imports_neither_django_nor_plotly():
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT)], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    result = json.loads(out.stdout)
    assert {"webapp.compare.core.series", "webapp.compare.core.stats", "webapp.compare.core.view",
            "webapp.compare.core.figures.reward", "webapp.compare.core.figures.frontier"} <= set(result["modules"])
    top = {name.split(".")[0] for name in result["loaded"]}
    assert "django" not in top and "plotly" not in top and "celery" not in top
