#!/usr/bin/env python3
"""Run the hostile corpus (tests/hostile/corpus.py) through REST on an embedded `videojobs serve`.

    .venv/bin/python scripts/hostile_corpus.py                 # table on stdout, JSON in var/hostile.json
    .venv/bin/python scripts/hostile_corpus.py --json out.json --keep var/hostile

Builds 70+ malformed or unusual files from the shared sample, submits each with the
detector only and max_frames=2, follows every job to its end, then checks that a normal
job still completes and that nothing was left in the data folder. Exit status 1 when a
file's outcome differs from the expected one, on any 5xx, a stuck job or a leftover.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hostile import corpus  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "media" / "bottle-detection.mp4"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=ROOT / "var" / "hostile.json", help="where the JSON report goes")
    parser.add_argument("--keep", type=Path, help="build files and run the service here (kept afterwards)")
    parser.add_argument("--model-cache", type=Path, default=ROOT / "var" / "models", help="converted-model cache")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds every job has to end")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        workdir = args.keep or Path(tmp)
        run = corpus.run_on_embedded_service(SAMPLE, workdir, args.model_cache, timeout=args.timeout)
    print(corpus.format_table(run.rows))
    summary = run.summary()
    print(f"\n{summary['files']} files, {summary['as_expected']} as expected, {summary['server_errors']} server errors; "
          f"outcomes {summary['outcomes']}; a normal job afterwards: {summary['after_corpus']}; "
          f"leftovers: {summary['leftovers']}; {summary['seconds']} s")
    for problem in summary["problems"]:
        print("PROBLEM:", problem)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"summary": summary, "rows": corpus.as_json(run.rows)}, indent=2))
    print(f"JSON: {args.json}")
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
