"""The chaos scenarios at CI size (`make chaos` runs them full size): every promise kept in each.

Private Postgres, NATS and SeaweedFS behind cuttable proxies; api, gateway and 3 workers
as processes (scripts/chaos.py). A scenario keeps its promises when every accepted job
ends COMPLETED with exactly one results object, none is stuck or completed twice, no
scratch file is left, the queue drains within 2 minutes of the fault's end, and status
reads stay under 500 ms at the 99th percentile (with Postgres frozen, under the gateway's call
timeout + 1 s: they are answered, if only with a timeout problem). In clock_skew, each skewed
process must also have measured its own host clock's offset, and a job held by a worker whose
host clock ran an hour ahead must be taken again by the database's clock once that worker is lost.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_script

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.servers, pytest.mark.timeout(1500)]


def test_every_chaos_scenario_keeps_every_promise(tmp_path):
    chaos = load_script("chaos")
    reports = chaos.run(chaos.QUICK, state_dir=tmp_path / "chaos")
    table = [chaos.format_report(r) for r in reports]
    (tmp_path / "chaos.json").write_text(json.dumps([r.__dict__ | {"problems": r.problems()} for r in reports],
                                                    indent=2))
    print("\n".join(table))
    assert [r.scenario for r in reports] == ["worker_sigkill_every_3s", "nats_stopped", "postgres_cut",
                                             "postgres_killed_and_restarted", "s3_stopped", "s3_frozen",
                                             "postgres_frozen", "stalled_uploads", "clock_skew"]
    for report in reports:
        assert report.accepted > 0, report.scenario
        assert report.problems() == [], "\n".join(table)
