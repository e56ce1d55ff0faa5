"""The prefetch-waste report and the comparison: files, CSVs, and a headless Chromium render."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moesim.cli.main import main

PNG = b"\x89PNG\r\n\x1a\n"


class _Imgs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def check_images(page: Path, min_count: int) -> None:
    """Every <img> resolves (embedded data or a file beside the page) to a non-trivial PNG."""
    parser = _Imgs()
    parser.feed(page.read_text(encoding="utf-8"))
    assert len(parser.srcs) >= min_count
    for src in parser.srcs:
        if src.startswith("data:image/png;base64,"):
            data = base64.b64decode(src.split(",", 1)[1])
        else:
            data = (page.parent / src).read_bytes()
        assert data[:8] == PNG and len(data) > 8000


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def render(page: Path, shot: Path) -> subprocess.CompletedProcess:
    exe = chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        args = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1200,3000",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            page.resolve().as_uri(),
        ]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
        dom = subprocess.run(
            [*args[:-2], "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert dom.returncode == 0 and "</html>" in dom.stdout
    # the browser parsed every figure into the DOM
    assert len(re.findall(r"<img ", dom.stdout)) == len(re.findall(r"<img ", page.read_text()))
    return proc


def check_screenshot(shot: Path) -> None:
    from PIL import Image

    data = shot.read_bytes()
    assert data[:8] == PNG and len(data) > 50_000
    img = Image.open(shot).convert("L")
    lo, hi = img.getextrema()
    assert hi - lo > 100  # not a blank page


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "r"
    assert (
        main(
            [
                "run",
                "--quiet",
                "--set",
                "trace.max_sequences=2",
                "--set",
                "predictor.name=oracle",
                "--set",
                "predictor.horizon=2",
                "--set",
                "cache.capacity=256",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_run_writes_extras_and_summary_stays_stable(run_dir, tmp_path):
    ex = pd.read_parquet(run_dir / "run_extras.parquet")
    import json

    s = json.loads((run_dir / "summary.json").read_text())
    assert list(ex.columns) == ["lead_ms", "slack_ms"]
    assert len(ex) == s["prefetch"]["useful"]
    assert ex["lead_ms"].mean() == pytest.approx(s["prefetch"]["lead_time_ms_mean"], abs=1e-5)


def test_waste_report_files_and_figures(run_dir, tmp_path, capsys):
    assert main(["report", str(run_dir), "--out", str(tmp_path / "rep")]) == 0
    page = tmp_path / "rep" / "report.html"
    check_images(page, 6)
    html = page.read_text()
    for words in ("Where did the bytes go?", "lead time", "Per-layer", "Tail latency", "wasted"):
        assert words in html
    ws = pd.read_csv(tmp_path / "rep" / "waste_summary.csv")
    assert {"bytes_prefetch_wasted", "waste_fraction", "prefetch_late", "ratio_bytes_vs_on_demand"} <= set(
        ws["metric"]
    )
    assert len(pd.read_csv(tmp_path / "rep" / "waste_per_layer.csv")) == 16
    pt = pd.read_csv(tmp_path / "rep" / "prefetch_timing.csv")
    assert set(pt["quantity"]) >= {"lead_ms", "slack_ms", "issue_to_arrival_ms"}
    assert len(pd.read_csv(tmp_path / "rep" / "over_time.csv")) > 10
    assert len(list((tmp_path / "rep" / "figures").glob("*.png"))) == 6


def test_report_on_old_run_without_extras(run_dir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    (old / "run_extras.parquet").unlink()
    for f in old.glob("*.parquet"):
        f.unlink()  # CSV-only directories are read too
    assert main(["report", str(old), "--quiet"]) == 0
    assert "No per-prefetch timing" in (old / "report" / "report.html").read_text()


def test_report_bad_dir_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_waste_report_opens_in_chromium(run_dir, tmp_path):
    assert main(["report", str(run_dir), "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    shot = tmp_path / "shot.png"
    render(tmp_path / "rep" / "report.html", shot)
    check_screenshot(shot)


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cmp") / "c"
    rc = main(
        [
            "compare",
            "--predictors",
            "none,popularity",
            "--caches",
            "lru,lfu",
            "--capacities",
            "64,256",
            "--set",
            "trace.max_sequences=1",
            "--out",
            str(out),
            "-j",
            "2",
            "--quiet",
        ]
    )
    assert rc == 0
    return out


def test_compare_table_has_bounds_and_identical_inputs(compare_dir):
    comp = pd.read_csv(compare_dir / "comparison.csv")
    # 2 predictors x 2 caches + belady bound + oracle bound per cache, each at 2 capacities
    assert len(comp) == (4 + 1 + 2) * 2
    assert set(comp["role"]) == {"policy", "bound:belady", "bound:oracle"}
    assert comp["trace_sha256"].nunique() == 1 and comp["profile_sha256"].nunique() == 1
    bel = comp[comp["role"] == "bound:belady"].set_index("capacity")["hit_rate"]
    for cache in ("lru", "lfu"):
        none = comp[(comp["predictor"] == "none") & (comp["cache"] == cache)].set_index("capacity")[
            "hit_rate"
        ]
        assert (none <= bel + 1e-12).all()  # no demand-only cache beats Belady
    assert (comp.loc[comp["predictor"] == "none", "waste_fraction"].isna()).all()
    for name in ("hit_rate", "tpot", "bytes_vs_on_demand", "waste_fraction"):
        assert (compare_dir / "figures" / f"{name}.png").is_file()
    check_images(compare_dir / "comparison.html", 4)


def test_comparison_opens_in_chromium(compare_dir, tmp_path):
    shot = tmp_path / "cmp.png"
    render(compare_dir / "comparison.html", shot)
    check_screenshot(shot)


def test_report_on_a_compare_dir(compare_dir, tmp_path):
    assert main(["report", str(compare_dir), "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    page = tmp_path / "rep" / "report.html"
    check_images(page, 3)
    assert (tmp_path / "rep" / "comparison.html").is_file()
    wt = pd.read_csv(tmp_path / "rep" / "waste_by_point.csv")
    assert len(wt) == 14 and "waste_fraction" in wt
    shot = tmp_path / "rep.png"
    render(page, shot)
    check_screenshot(shot)


# -- layout in the browser and the figures' margins ------------------------------------------------
_LAYOUT_JS = """<script>
window.addEventListener('load', () => {
  const vw = document.documentElement.clientWidth;
  const r = {vw: vw, page: document.documentElement.scrollWidth, imgs: [], tables: []};
  for (const img of document.images) {
    const b = img.getBoundingClientRect();
    r.imgs.push({ok: img.complete && img.naturalWidth > 0, right: b.right});
  }
  for (const t of document.querySelectorAll('table')) {
    const p = t.parentElement, b = p.getBoundingClientRect();
    r.tables.push({cls: p.className, overflow: getComputedStyle(p).overflowX, right: b.right});
  }
  const pre = document.createElement('pre');
  pre.id = 'layout';
  pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
});
</script>"""


def check_layout(page: Path, tmp_path: Path, width: int = 800) -> dict:
    """Open ``page`` at ``width`` px in headless Chromium: every figure decodes and fits, the page does
    not scroll sideways, and every table sits in a wrapper that scrolls instead."""
    import json

    exe = chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    probe = page.parent / f"_layout_{page.name}"
    probe.write_text(
        page.read_text(encoding="utf-8").replace("</body>", _LAYOUT_JS + "</body>"), encoding="utf-8"
    )
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                f"--user-data-dir={profile}",
                f"--window-size={width},900",
                "--virtual-time-budget=5000",
                "--dump-dom",
                probe.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    probe.unlink()
    found = re.search(r"<pre id=\"layout\">(.*?)</pre>", dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    r = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert r["page"] <= r["vw"] + 1, f"{page.name}: the page scrolls sideways ({r['page']} > {r['vw']} px)"
    assert r["imgs"] and all(i["ok"] for i in r["imgs"]), f"{page.name}: a figure did not decode"
    assert all(i["right"] <= r["vw"] + 1 for i in r["imgs"]), f"{page.name}: a figure is wider than the page"
    for t in r["tables"]:
        assert t["cls"] == "tablewrap" and t["overflow"] == "auto" and t["right"] <= r["vw"] + 1, t
    return r


def check_margins(png: Path) -> None:
    """Nothing is cut at the figure's edge: a 3-pixel frame of background all around (labels,
    legends and titles inside the saved image)."""
    from PIL import Image

    img = np.asarray(Image.open(png).convert("L"))
    frame = np.concatenate([img[:3].ravel(), img[-3:].ravel(), img[:, :3].ravel(), img[:, -3:].ravel()])
    assert frame.min() >= 250, f"{png.name}: ink touches the edge of the image (something is clipped)"


def test_run_report_layout_and_margins(run_dir, tmp_path):
    assert main(["report", str(run_dir), "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    for png in (tmp_path / "rep" / "figures").glob("*.png"):
        check_margins(png)
    html = (tmp_path / "rep" / "report.html").read_text()
    assert not re.search(r"\d,\d{3}\.0\b", html), "a count printed as a float"
    assert "GiB" in html
    check_layout(tmp_path / "rep" / "report.html", tmp_path)


def test_comparison_layout_and_margins(compare_dir, tmp_path):
    for png in (compare_dir / "figures").glob("*.png"):
        check_margins(png)
    r = check_layout(compare_dir / "comparison.html", tmp_path)
    assert len(r["imgs"]) >= 4


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "s"
    rc = main(
        [
            "sweep",
            "--grid",
            "predictor.name=none,oracle",
            "--grid",
            "cache.capacity=64,256",
            "--set",
            "trace.max_sequences=1",
            "--heatmap",
            "counts.hit_rate",
            "--heatmap",
            "traffic.bytes_h2d",
            "--out",
            str(out),
            "-j",
            "2",
            "--quiet",
        ]
    )
    assert rc == 0
    return out


def test_sweep_report_renders_without_empty_charts(sweep_dir, tmp_path):
    assert main(["report", str(sweep_dir), "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    page = tmp_path / "rep" / "report.html"
    check_images(page, 4)
    for png in (tmp_path / "rep" / "figures").glob("*.png"):
        check_margins(png)
    check_layout(page, tmp_path)
    shot = tmp_path / "sweep.png"
    render(page, shot)
    check_screenshot(shot)


def test_heatmaps_and_gantt_render(sweep_dir, tmp_path):
    pngs = sorted(sweep_dir.glob("heatmap_*.png"))
    assert len(pngs) == 2
    gantt = tmp_path / "g.png"
    assert (
        main(
            [
                "run",
                "--quiet",
                "--set",
                "trace.max_sequences=1",
                "--out",
                str(tmp_path / "r"),
                "--gantt",
                str(gantt),
            ]
        )
        == 0
    )
    pngs.append(gantt)
    page = tmp_path / "figures.html"
    page.write_text(
        "<!DOCTYPE html><html><body>"
        + "".join(f"<figure><img src='{p.resolve().as_uri()}' style='max-width:100%'></figure>" for p in pngs)
        + "</body></html>",
        encoding="utf-8",
    )
    for png in pngs:
        check_margins(png)
    r = check_layout(page, tmp_path, width=1400)
    assert len(r["imgs"]) == 3
