#!/usr/bin/env python3
"""Governance scanner (run by `make test`).

1. No phase-named files or folders outside .ampcode/ and scripts/.
2. No next-phase concepts in functional code (services/, libs/, protos/, deploy/):
   the forbidden vocabulary lives in scripts/forbidden_vocabulary.txt, one regex a line.

Exit code 1 and one line per finding when anything is found.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOCABULARY = Path(__file__).with_name("forbidden_vocabulary.txt")
PHASE_EXEMPT = (".ampcode", "scripts", ".git")
FUNCTIONAL = ("services", "libs", "protos", "deploy")
SKIP_DIRS = {".git", ".venv", ".tools", "node_modules", "__pycache__", "var", ".pytest_cache"}
PHASE_NAME = re.compile(r"phase[\s_\-\u2011]*\d+", re.IGNORECASE)
TEXT_SUFFIXES = {".py", ".proto", ".yaml", ".yml", ".toml", ".md", ".txt", ".json", ".cfg", ".ini", ".sh", ".mako", ""}


def load_vocabulary(path: Path = VOCABULARY) -> list[re.Pattern[str]]:
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return [re.compile(ln, re.IGNORECASE) for ln in lines if ln and not ln.startswith("#")]


def repo_files(root: Path) -> list[Path]:
    """Tracked and untracked-but-not-ignored files when in git; a plain walk otherwise."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True, text=True, check=True
        ).stdout
        files = [root / line for line in out.splitlines() if line]
        if files:
            return [f for f in files if f.exists()]
    except (OSError, subprocess.CalledProcessError):
        pass
    return [p for p in root.rglob("*") if p.is_file() and not SKIP_DIRS & set(p.relative_to(root).parts)]


def scan(root: Path, vocabulary: list[re.Pattern[str]]) -> list[str]:
    findings: list[str] = []
    for path in repo_files(root):
        rel = path.relative_to(root)
        if SKIP_DIRS & set(rel.parts):
            continue
        if rel.parts[0] not in PHASE_EXEMPT:
            for part in rel.parts:
                if PHASE_NAME.search(part):
                    findings.append(f"{rel}: phase-named path component {part!r} (allowed only in .ampcode/ and scripts/)")
                    break
        if rel.parts[0] in FUNCTIONAL and path.suffix in TEXT_SUFFIXES:
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            for lineno, line in enumerate(text.splitlines(), 1):
                for pattern in vocabulary:
                    if pattern.search(line):
                        findings.append(f"{rel}:{lineno}: forbidden vocabulary /{pattern.pattern}/: {line.strip()[:100]}")
    return findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    findings = scan(args.root.resolve(), load_vocabulary())
    for finding in findings:
        print(finding)
    print(f"governance scan: {len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
