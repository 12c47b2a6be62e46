"""JSON Schemas of the contract's documents, generated from the types and kept in the repo.

``python -m videojobs.common.schemas`` rewrites the files (``make schemas``);
``--check`` fails if they differ from the types (run by the tests). The gateway
serves them at ``/video/schemas/{name}.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel

from videojobs.common.resources import Capabilities, JobResource
from videojobs.common.results import ResultsDocument

FOLDER = Path(__file__).parent
SCHEMAS: dict[str, type[BaseModel]] = {
    "results": ResultsDocument,
    "job": JobResource,
    "capabilities": Capabilities,
}


def render(name: str) -> str:
    schema = SCHEMAS[name].model_json_schema()
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"/video/schemas/{name}.json",
              **schema}
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def path_of(name: str) -> Path:
    return FOLDER / f"{name}.schema.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m videojobs.common.schemas")
    parser.add_argument("--check", action="store_true", help="fail if a file differs from its type")
    args = parser.parse_args(argv)
    stale = []
    for name in SCHEMAS:
        text = render(name)
        path = path_of(name)
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"schemas out of date: {', '.join(stale)} (run `make schemas`)", file=sys.stderr)
        return 1
    print("schemas: " + ("up to date" if args.check else "written") + f" ({', '.join(SCHEMAS)})")
    return 0

