"""``moesim list`` names what a scenario can refer to, from the live registries and catalogs."""

from __future__ import annotations

from moesim.cli.main import main
from moesim.hardware.load import profile_refs
from moesim.models.catalog import CATALOG
from moesim.policies.registries import CACHES, MISS_HANDLERS, PREDICTORS


def test_list_shows_every_plugin_model_device_and_profile(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    names = {line.split()[0] for line in out.splitlines() if line.startswith("  ") and line.strip()}
    for reg in (PREDICTORS, CACHES, MISS_HANDLERS):
        assert set(reg.names()) <= names
    assert set(CATALOG) <= names
    assert set(profile_refs()) <= names
    assert "      accuracy: 0.0 <= float <= 1.0 (default 0.8)" in out.splitlines()  # declared schema shown


def test_list_one_kind(capsys):
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("models (model.name):") and "predictors" not in out
