"""Fuzz the numeric flags of ``moesim trace synth`` and ``trace import``: a value out of range is
refused before any work starts (exit 2, the flag named, nothing written); a value in range works."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from fuzzkit import fuzz, run_cli
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_importers import mixtral_records, table_csv_rows, write_csv_rows

from moesim.traces.native import load_trace

VALUES = ["0", "-1", "1", "2", "3", "1.5", "abc", "", str(2**31), str(2**63), "9" * 30, "1e3", "16"]
SYNTH_FLAGS = [
    "--sequences",
    "--tokens",
    "--prefill-tokens",
    "--layers",
    "--experts",
    "--top-k",
    "--seed",
    "--fit-rounds",
]


def _check(res, flag: str, out: Path) -> None:
    if res.code == 0:
        assert load_trace(out).num_tokens > 0
        return
    assert res.code == 2 and "Traceback" not in res.err
    errors = [ln for ln in res.err.splitlines() if ln.startswith("moesim: error:")]
    # argparse prints its usage line above the error; moesim's own refusals are the only line
    assert len(errors) == 1 and flag in errors[0], res.err
    assert not out.exists()


@fuzz(60)
@given(flag=st.sampled_from(SYNTH_FLAGS), value=st.sampled_from(VALUES))
def test_fuzz_synth_flags(flag, value):
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "s.moetrace"
        argv = ["trace", "synth", "--out", out, "--sequences", "2", "--tokens", "3", "--layers", "2"]
        argv += ["--experts", "8", "--top-k", "2", f"{flag}={value}"]
        _check(run_cli(argv), flag, out)


@fuzz(40)
@given(flag=st.sampled_from(["--num-experts", "--num-layers"]), value=st.sampled_from(VALUES))
def test_fuzz_import_flags(flag, value):
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "i.moetrace"
        if flag == "--num-experts":
            src = Path(d) / "t.csv"
            write_csv_rows(table_csv_rows(), src)
            argv = ["trace", "import", "-f", "table", src]
        else:
            src = Path(d) / "x_routing.jsonl"
            src.write_text("\n".join(json.dumps(r) for r in mixtral_records()))
            argv = ["trace", "import", "-f", "mixtral-jsonl", src]
        res = run_cli([*argv, "--out", out, f"{flag}={value}"])
        if res.code == 2 and flag not in res.err:  # a valid flag the data contradicts: names the file
            assert len(res.err.strip().splitlines()) == 1 and str(src) in res.err
            assert not out.exists()
            return
        _check(res, flag, out)
