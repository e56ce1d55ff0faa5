"""The worked example of docs/plugins.md is real code: as written, in its own file plus one
registration, it runs a scenario and changes the result against LRU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_docs_mru_policy_runs_as_written(tmp_path):
    text = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(# moesim/policies/caches/mru.py\n.*?)```", text, re.S).group(1)
    (tmp_path / "mru_doc.py").write_text(code, encoding="utf-8")
    script = (
        "import mru_doc, moesim\n"  # importing the file is its registration (the docs' import line)
        "base = {'trace.max_sequences': 1, 'cache.capacity': 64}\n"
        "m = moesim.run(None, {**base, 'cache.policy': 'mru', 'cache.params.spare': 2}).summary\n"
        "l = moesim.run(None, base).summary\n"
        "print(m['provenance']['scenario']['cache']['policy'], m['counts']['hits'] != l['counts']['hits'])\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["mru", "True"]
