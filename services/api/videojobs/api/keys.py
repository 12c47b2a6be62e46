"""`videojobs keys create|list|revoke`: API keys of tenants, kept in the job database.

    videojobs keys create --tenant NAME [--label L] [--json]   # prints the key once
    videojobs keys list [--json]
    videojobs keys revoke PREFIX

The key is shown only by `create`; the database keeps its public prefix and a keyed
hash. `create` also shows the tenant's webhook signing secret (one per tenant).
"""

from __future__ import annotations

import argparse
import json
import sys

from videojobs.common.adapters.factory import make_repository, make_tenant_store
from videojobs.common.config import load_settings
from videojobs.common.job import utcnow
from videojobs.common.ports.tenants import TenantStore
from videojobs.common.tenants import ApiKeyRecord, check_tenant_name, hash_key, new_key


def create_key(store: TenantStore, tenant_id: str, label: str, pepper: str) -> dict[str, str]:
    """A new key of `tenant_id` (the tenant is created if needed): the key, its prefix, the webhook secret."""
    tenant = store.ensure_tenant(check_tenant_name(tenant_id))
    key, prefix = new_key()
    store.add_key(ApiKeyRecord(prefix=prefix, tenant_id=tenant.tenant_id, label=label,
                               key_hash=hash_key(key, pepper), created_at=utcnow()))
    return {"key": key, "prefix": prefix, "tenant": tenant.tenant_id, "webhook_secret": tenant.webhook_secret}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="videojobs keys", description="Manage tenants' API keys.")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create a key (printed once)")
    create.add_argument("--tenant", required=True, help="the tenant the key acts for (created if new)")
    create.add_argument("--label", default="", help="a note to recognise the key by")
    create.add_argument("--json", action="store_true", help='print {"key", "prefix", "tenant", "webhook_secret"}')
    listing = sub.add_parser("list", help="list keys (prefix, tenant, label, created, revoked)")
    listing.add_argument("--json", action="store_true")
    revoke = sub.add_parser("revoke", help="revoke a key by its prefix")
    revoke.add_argument("prefix")
    args = parser.parse_args(argv)

    settings = load_settings()
    repo = make_repository(settings)
    store = make_tenant_store(repo)
    try:
        if args.action == "create":
            if len(args.label) > 200:
                parser.error("--label is at most 200 characters")
            try:
                made = create_key(store, args.tenant, args.label, settings.api_key_pepper)
            except ValueError as exc:
                parser.error(str(exc))
            if args.json:
                print(json.dumps(made))
            else:
                print(f"API key for tenant {made['tenant']} (shown once, keep it safe):\n  {made['key']}\n"
                      f"prefix: {made['prefix']}\nwebhook signing secret of the tenant: {made['webhook_secret']}")
        elif args.action == "list":
            rows = [{"prefix": k.prefix, "tenant": k.tenant_id, "label": k.label,
                     "created_at": k.created_at.isoformat(timespec="seconds"),
                     "revoked_at": k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else None}
                    for k in store.list_keys()]
            if args.json:
                print(json.dumps(rows))
            else:
                for r in rows:
                    state = f"revoked {r['revoked_at']}" if r["revoked_at"] else "active"
                    print(f"{r['prefix']}  {r['tenant']:<20} {state:<28} {r['created_at']}  {r['label']}")
        else:
            if not store.revoke_key(args.prefix):
                print(f"videojobs keys: no active key with prefix {args.prefix[:16]!r}", file=sys.stderr)
                return 1
            print(f"revoked {args.prefix}")
    finally:
        repo.dispose()
    return 0
