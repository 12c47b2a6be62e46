"""Build-time model download for the worker image: fetch MODEL_URL, check its sha256.

    python fetch_model.py URL SHA256 DEST

Runs only inside `docker build` (the `models` stage); the running worker never
downloads anything. A missing or wrong checksum fails the build.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request


def fetch(url: str, sha256: str, dest: str) -> None:
    if len(sha256) != 64:
        raise SystemExit("MODEL_SHA256 (64 hex digits) is required with MODEL_URL")
    digest = hashlib.sha256()
    tmp = dest + ".part"
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    with urllib.request.urlopen(url, timeout=60) as src, open(tmp, "wb") as out:  # noqa: S310
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256.lower():
        os.unlink(tmp)
        raise SystemExit(f"sha256 mismatch for {url}: got {digest.hexdigest()}, want {sha256}")
    os.replace(tmp, dest)
    print(f"model {dest} sha256 {sha256}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    fetch(*sys.argv[1:])
