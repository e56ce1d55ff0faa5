"""The published-measurement catalog: mixtral-offloading Table 2 as loaded, and the loader's checks."""

from __future__ import annotations

import tempfile
from importlib import resources

import pytest

from moesim.errors import MoesimInputError
from moesim.hardware import get_device
from moesim.hardware.memory import check_gpu_memory
from moesim.hardware.pcie import link_gbps
from moesim.models import get_model
from moesim.models.precision import get_format
from moesim.validation import load_catalog
from moesim.validation.catalog import parse_catalog


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def _by_id(cases):
    return {c.id: c for c in cases}


def test_table2_shape(catalog) -> None:
    sources, cases = catalog
    t2 = [c for c in cases if c.source == "mixtral-offloading"]
    assert len(t2) == 32  # 4 algorithms x 2 expert widths x 4 GPUs
    assert sum(c.mapped for c in t2) == 24  # the naive accelerate row is not mapped
    assert {c.row for c in t2 if not c.mapped} == {"Naive offloading (accelerate)"}
    assert sources["mixtral-offloading"].url == "https://arxiv.org/abs/2312.17238"
    assert len({c.id for c in cases}) == len(cases)


def test_table2_cells(catalog) -> None:
    c = _by_id(catalog[1])
    assert c["mixtral-offloading/t2/full/2bit/a100"].published.value == 3.061
    assert c["mixtral-offloading/t2/full/3bit/t4"].published.value == 1.603
    assert c["mixtral-offloading/t2/no-prefetch/2bit/3060"].published.value == 2.051
    assert c["mixtral-offloading/t2/no-cache/3bit/3080m"].published.value == 1.595
    assert c["mixtral-offloading/t2/naive/3bit/3060"].note  # the 1.791 oddity is flagged, not fixed
    assert c["mixtral-offloading/t2/full/2bit/a100"].published.tpot_ms == pytest.approx(1000 / 3.061)
    # Setup: k = 2 on the 3060, 4 elsewhere; 3-bit T4 is the Azure one; Gen3 on the 3060 and T4.
    assert c["mixtral-offloading/t2/full/3bit/3060"].setup.cache_per_layer == 2
    assert c["mixtral-offloading/t2/full/3bit/3080m"].setup.cache_per_layer == 4
    assert "Azure" in c["mixtral-offloading/t2/full/3bit/t4"].setup.host
    assert "Colab" in c["mixtral-offloading/t2/full/2bit/t4"].setup.host
    assert c["mixtral-offloading/t2/full/2bit/3060"].setup.pcie_gen == 3
    nc = c["mixtral-offloading/t2/no-cache/2bit/a100"]
    assert (
        nc.scenario["cache.capacity"] == 1
        and nc.scenario["cache.scope"] == "global"
        and nc.scenario["cache.bypass"]
        and nc.scenario["predictor.name"] == "none"
    )
    assert c["mixtral-offloading/t2/full/2bit/a100"].scenario["predictor.name"] == "noisy-oracle"


def test_full_algorithm_is_fastest_in_every_column(catalog) -> None:
    """A property of the published table the mapping relies on (prefetch and cache help)."""
    c = _by_id(catalog[1])
    for bits in (2, 3):
        for gpu in ("a100", "3080m", "3060", "t4"):
            v = [
                c[f"mixtral-offloading/t2/{a}/{bits}bit/{gpu}"].published.value
                for a in ("full", "no-prefetch", "no-cache")
            ]
            assert v[0] > v[1] > v[2], (bits, gpu)


def test_mapped_scenarios_resolve_and_fit(catalog) -> None:
    for case in catalog[1]:
        if not case.mapped:
            continue
        s = case.scenario
        device = get_device(s["hardware.profile"].split(":", 1)[1])
        fmt = get_format(s["model.expert_dtype"])
        assert fmt.key == f"hqq{case.setup.expert_bits}"
        assert link_gbps(s["hardware.pcie_gen"], s["hardware.pcie_lanes"]) > 0
        # The paper's setups must fit their GPUs: k slots per layer plus one per layer of slack.
        slots = (case.setup.cache_per_layer + 1) * 32
        check = check_gpu_memory(
            get_model(s["model.name"]),
            expert_slots=slots,
            context=4096,
            expert_dtype=fmt.key,
            dense_dtype=s["model.dense_dtype"],
            device=device,
        )
        assert check.fits, (case.id, check.message())


def _text() -> str:
    return resources.files("moesim.validation").joinpath("published/mixtral_offloading.yaml").read_text()


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("unit: tokens/s", "unit: tok/s", "published.unit must be one of"),
        ("value: 3.061", "value: -3.061", "published.value must be a positive number"),
        ("    cache_per_layer: 4\n", "    cache_per_layer: four\n", "cache_per_layer must be of type int"),
        ("  row: Full algorithm", "  rows: Full algorithm", "unknown field 'rows'"),
        (
            "source: mixtral-offloading\n  table",
            "source: nope\n  table",
            "source 'nope' is not under sources",
        ),
        ("format: moesim-published", "format: other", "not a published-measurement catalog"),
        ("  mapped: true\n", "  mapped: yes please\n", "mapped must be of type bool"),
    ],
)
def test_bad_catalog_is_one_clear_error(old, new, needle) -> None:
    text = _text()
    assert old in text
    with pytest.raises(MoesimInputError, match=needle):
        parse_catalog(text.replace(old, new, 1), "bad.yaml")


def test_duplicate_ids_and_missing_scenario(tmp_path) -> None:
    text = _text()
    head, first = text.split("cases:\n", 1)
    one = first.split("\n- id:")[0]
    with pytest.raises(MoesimInputError, match="appears twice"):
        parse_catalog(head + "cases:\n" + one + "\n" + one + "\n", "dup.yaml")
    no_scenario = one.split("  scenario:")[0]
    p = tmp_path / "c.yaml"
    p.write_text(head + "cases:\n" + no_scenario + "\n")
    with pytest.raises(MoesimInputError, match="a mapped case needs scenario keys"):
        load_catalog(p)


def test_mapping_rules_hold_for_every_table2_case(catalog) -> None:
    """The mapping decisions of docs/validation.md, one rule per column of the table (never per row)."""
    sources, cases = catalog
    assert sources["mixtral-offloading"].runtime_preset == "eager-pytorch"
    assert "write-back" in sources["mixtral-offloading"].mapping_notes.lower()
    for c in cases:
        if c.source != "mixtral-offloading" or not c.mapped:
            continue
        s = c.scenario
        assert s["miss.writeback"] is False  # ruled out by the published rows (copy_time_check)
        assert s["cache.capacity"] == (c.setup.cache_per_layer if c.setup.lru_cache else 1)
        assert s["cache.scope"] == ("per-layer" if c.setup.lru_cache else "global")
        if c.setup.speculative_prefetch:
            assert s["predictor.name"] == "noisy-oracle" and s["predictor.params"] == {"accuracy": 0.8}
        else:
            assert s["predictor.name"] == "none"
        assert s["hardware.pcie_gen"] == c.setup.pcie_gen and s["batch"] == 1
        assert s["model.expert_dtype"] == f"hqq{c.setup.expert_bits}" and s["model.dense_dtype"] == "hqq4"


@pytest.mark.shared
def test_no_cache_mapping_reuses_nothing(external_traces) -> None:
    """One global slot with bypass: no expert survives to the next token (0 hits) on the real trace."""
    from moesim.experiments.pipeline import run_scenario
    from moesim.experiments.scenario import load_scenario
    from moesim.traces.importers import import_trace
    from moesim.traces.native import save_trace

    trace = import_trace(
        "mixtral-jsonl", external_traces / "Mario928__speculative-moe" / "gsm8k_2_routing.jsonl"
    )
    with tempfile.TemporaryDirectory() as tmp:
        save_trace(trace, f"{tmp}/m.moetrace", validate=False)
        v = {
            "model.name": "mixtral-8x7b",
            "trace.path": f"{tmp}/m.moetrace",
            "cache.scope": "global",
            "cache.capacity": 1,
            "cache.bypass": True,
        }
        counts = run_scenario(load_scenario(None, values=v)).summary["counts"]
    assert counts["hits"] == 0 and counts["misses"] >= counts["accesses"] - 2
