"""The valid files the fuzz suite mutates, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzzkit import make_base


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> dict[str, Path]:
    return make_base(tmp_path_factory.mktemp("fuzzbase"))
