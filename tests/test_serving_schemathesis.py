"""Generated requests from the OpenAPI schema (schemathesis), valid and invalid: never a 500.

Bounded: 15 examples per operation and mode, in-process (no network)."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from serving_runs import tiny_runs  # noqa: E402

from ranker.serving.app import create_app  # noqa: E402
from ranker.serving.bundle import write_bundle  # noqa: E402


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> object:
    runs = tiny_runs(tmp_path_factory.getbasetemp() / "serving-runs")
    root = tmp_path_factory.mktemp("fuzz")
    write_bundle(runs["retrieval"], root / "v1", ranker_run=runs["ranker"])
    app = create_app(root / "v1", f"sqlite:///{root / 'events.db'}")
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_request_makes_a_500(api_schema: object) -> None:
    operations = [r.ok() for r in api_schema.get_all_operations()]  # type: ignore[attr-defined]
    assert {op.path for op in operations} >= {"/events", "/recommend", "/score", "/similar/{item}"}
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    for op, mode in [(op, mode) for op in operations for mode in modes]:

        @given(case=op.as_strategy(mode))
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: object) -> None:
            if case.path == "/reload":  # type: ignore[attr-defined]
                case.body = {}  # type: ignore[attr-defined]  # never point the server at a generated path
            response = case.call()  # type: ignore[attr-defined]
            assert response.status_code < 500, (case.path, response.text[:300])  # type: ignore[attr-defined]

        try:
            check()
        except Unsatisfiable:  # an operation without inputs has no invalid request to make
            assert mode == schemathesis.GenerationMode.NEGATIVE, op.path
