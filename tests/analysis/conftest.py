"""The analysts' tests share one run of the real pipeline (see pipeline_run.py)."""

from __future__ import annotations

import pytest

from analysis.pipeline_run import Run, run_pipeline


@pytest.fixture(scope="package")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_pipeline(tmp_path_factory.mktemp("analysis-run"))
