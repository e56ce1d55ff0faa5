"""One override parser for run, sweep and the API; checks by declared schema, in one module."""

from __future__ import annotations

import json
import math

import pytest

from moesim.cli.main import main
from moesim.errors import MoesimInputError
from moesim.experiments.overrides import apply_overrides, parse_override, resolve_scenario
from moesim.experiments.scenario import Scenario, load_scenario
from moesim.experiments.sweep import SweepPlan, parse_grid_arg
from moesim.policies.params import Param, ParamSchema, check_params, specs_of
from moesim.policies.registries import CACHES, MISS_HANDLERS, PREDICTORS

TINY = ["--set", "trace.max_sequences=1"]


def test_run_sets_a_predictor_param_by_its_dotted_key(tmp_path, capsys):
    out = {}
    for acc in ("0.9", "0.2"):
        d = tmp_path / acc
        args = [
            "run",
            *TINY,
            "--set",
            "predictor.name=noisy-oracle",
            "--set",
            f"predictor.params.accuracy={acc}",
        ]
        assert main([*args, "--out", str(d), "--quiet"]) == 0, capsys.readouterr().err
        out[acc] = json.loads((d / "summary.json").read_text(encoding="utf-8"))
    assert out["0.9"]["provenance"]["scenario"]["predictor"]["params"] == {"accuracy": 0.9}
    assert out["0.9"]["counts"]["hits"] > out["0.2"]["counts"]["hits"]  # the value reached the predictor


def test_run_sweep_and_api_resolve_the_same_scenario():
    texts = ["predictor.name=noisy-oracle", "predictor.params.accuracy=0.9", "cache.capacity=1e2"]
    with pytest.raises(MoesimInputError, match="cache.capacity must be an integer, got 100.0"):
        load_scenario(None, texts)
    texts[-1] = "cache.capacity=100"
    from_run = load_scenario(None, texts)
    values = {"predictor.name": "noisy-oracle", "predictor.params.accuracy": 0.9, "cache.capacity": 100}
    from_api = resolve_scenario(None, None, values)
    plan = SweepPlan.from_grid(None, {"predictor.params.accuracy": [0.9]}, texts[:1] + texts[2:])
    from_sweep = resolve_scenario(plan.scenario, plan.base, plan.points[0])
    assert from_run.to_dict() == from_api.to_dict() == from_sweep.to_dict()


def test_deep_keys_are_type_checked_whichever_way_they_come():
    bad = {"predictor.name": "noisy-oracle", "predictor.params.accuracy": "high"}
    with pytest.raises(MoesimInputError, match="predictor.params.accuracy: noisy-oracle needs a number"):
        resolve_scenario(None, None, bad)
    with pytest.raises(MoesimInputError, match="predictor.params.accuracy: noisy-oracle needs a number"):
        load_scenario(None, ["predictor.name=noisy-oracle", "predictor.params.accuracy=high"])


def test_later_overrides_win_and_the_input_mapping_is_not_changed():
    raw = {"predictor": {"params": {"a": 1}}}
    out = apply_overrides(
        raw, [("predictor.params.b", 2), ("predictor.params", {"c": 3}), ("predictor.params.d", 4)]
    )
    assert out["predictor"]["params"] == {"c": 3, "d": 4}
    assert raw == {"predictor": {"params": {"a": 1}}}


@pytest.mark.parametrize(
    "key, needle",
    [
        ("cach.policy", "unknown key 'cach'"),
        ("cache.polcy", "valid keys under cache"),
        ("cache.capacity.x", "cache.capacity is not a mapping"),
        ("batch.x", "batch has no sub-keys"),
        ("cache..policy", "dotted names"),
    ],
)
def test_bad_keys_are_one_line(key, needle):
    with pytest.raises(MoesimInputError, match=needle):
        apply_overrides({}, [(key, 1)])


def test_set_values_are_strict_yaml():
    assert parse_override("hardware.h2d_gbps=.inf") == ("hardware.h2d_gbps", math.inf)
    assert parse_override("cache.capacity=1e3") == ("cache.capacity", 1000.0)
    assert parse_override("trace.domain=on") == ("trace.domain", "on")
    assert parse_override("trace.domain=[unclosed") == ("trace.domain", "[unclosed")  # as typed
    with pytest.raises(MoesimInputError, match="duplicate key"):
        parse_override("predictor.params={a: 1, a: 2}")
    assert parse_grid_arg("hardware.h2d_gbps=16,1e3,.inf") == ("hardware.h2d_gbps", [16, 1000.0, math.inf])


def test_every_registered_plugin_declares_a_checkable_schema():
    for reg in (PREDICTORS, CACHES, MISS_HANDLERS):
        for name, cls in reg.items():
            specs = specs_of(cls.params)
            assert set(specs) == set(cls.params), name
            for key, spec in specs.items():
                assert spec.default == cls.params[key], (name, key)
                # every default passes its own schema
                check_params("x.params", name, cls.params, {key: spec.default})


def test_schema_checks_kind_range_and_choices_without_coercing():
    schema = ParamSchema(
        n=Param(2, "int", 1, 8), f=Param(0.5, "float", 0.0, 1.0), m=Param("a", "str", choices=("a", "b"))
    )
    assert check_params("p", "toy", schema, {"n": 8, "f": 1, "m": "b"}) == {"n": 8, "f": 1.0, "m": "b"}
    for given, needle in [
        ({"n": 2.0}, "p.n: toy needs an integer, got 2.0"),
        ({"n": True}, "p.n: toy needs an integer, got True"),
        ({"n": 9}, "p.n: toy needs n >= 1 and <= 8, got 9"),
        ({"f": math.nan}, "p.f: toy needs a number, got nan"),
        ({"f": "0.5"}, "p.f: toy needs a number, got '0.5'"),
        ({"m": "c"}, "p.m: toy takes one of a, b; got 'c'"),
        ({"zz": 1}, "p: toy takes no parameter 'zz'; it takes: f, m, n"),
    ]:
        with pytest.raises(MoesimInputError) as err:
            check_params("p", "toy", schema, given)
        assert str(err.value) == needle


def test_a_plain_dict_of_defaults_is_still_a_schema():
    assert specs_of({"a": 1, "b": 0.5, "c": None})["a"] == Param(1, "int")
    with pytest.raises(MoesimInputError, match="needs an integer"):
        check_params("p", "legacy", {"a": 1}, {"a": "x"})


@pytest.mark.parametrize(
    "sets, needle",
    [
        (
            ["predictor.name=prev-token", "predictor.horizon=17"],
            "predictor.horizon: prev-token looks back 1 token",
        ),
        (["cache.capacity=4"], "cache.capacity: 4 slots in total cannot hold"),
        (["prefill=true"], "prefill:"),
        (["arrivals.process=times", "arrivals.times_ms=[1]", "trace.max_sequences=2"], "arrivals.times_ms"),
        (["tiers.dram_gb=0.001"], "tiers.dram_gb:"),
        (["tiers.dram_policy=belady"], "tiers.dram_policy"),
        (["arrivals.process=poisson"], "arrivals.rate_per_s"),
        (["hardware.extrapolation=maybe"], "hardware.extrapolation: unknown value 'maybe'"),
        (["cache.scope=everywhere"], "cache.scope: unknown value"),
    ],
)
def test_checks_before_and_after_loading_are_one_line_exit_2(tmp_path, capsys, sets, needle):
    out = tmp_path / "out"
    args = [x for s in sets for x in ("--set", s)]
    assert main(["run", *args, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
    assert not out.exists()


def test_validate_is_a_method_of_the_scenario_and_takes_registries():
    from moesim.policies.registries import DEFAULT

    sc = Scenario()
    assert sc.validate(DEFAULT) is sc
    sc.batch = 0
    with pytest.raises(MoesimInputError, match="batch: must be >= 1, got 0"):
        sc.validate()
