"""`videojobs tenants list|set`: tenants and their own limits, kept in the job database.

    videojobs tenants list [--json]
    videojobs tenants set TENANT [--max-active-jobs N|default] [--request-rate RATE|none|default] [--create]

A tenant's own limits take the place of the service's defaults (VIDEOJOBS_MAX_ACTIVE_JOBS_PER_TENANT,
VIDEOJOBS_TENANT_REQUEST_RATE) for that tenant alone; `default` gives the tenant the service's again.
Every api process applies a change within a few seconds (its cache of tenants' limits).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from videojobs.api.quotas import service_defaults
from videojobs.common.adapters.factory import make_repository, make_tenant_store
from videojobs.common.config import load_settings
from videojobs.common.ports.tenants import TenantStore
from videojobs.common.tenants import Tenant, TenantLimits, check_tenant_name

DEFAULT = "default"


def describe(tenant: Tenant, defaults: TenantLimits, active_keys: int) -> dict[str, object]:
    """A tenant as `list` shows it: its own limits (None: the service's) and the limits in force."""
    own = tenant.limits
    in_force = own.over(defaults)
    return {"tenant": tenant.tenant_id, "active_keys": active_keys,
            "max_active_jobs": own.max_active_jobs, "request_rate": own.request_rate,
            "max_active_jobs_in_force": in_force.max_active_jobs, "request_rate_in_force": in_force.request_rate,
            "created_at": tenant.created_at.isoformat(timespec="seconds")}


def set_limits(store: TenantStore, tenant_id: str, max_active_jobs: str | None, request_rate: str | None,
               create: bool = False) -> Tenant:
    """Change the tenant's own limits: a field left None stays as it is, "default" gives back the service's.

    ValueError (the message says why) for a bad value or an unknown tenant without `create`."""
    check_tenant_name(tenant_id)
    tenant = store.ensure_tenant(tenant_id) if create else store.get_tenant(tenant_id)
    if tenant is None:
        raise ValueError(f"no tenant {tenant_id!r}: tenants come with their first key (videojobs keys create "
                         f"--tenant {tenant_id}), or pass --create")
    limits = TenantLimits(
        tenant.limits.max_active_jobs if max_active_jobs is None else _max_active_jobs(max_active_jobs),
        tenant.limits.request_rate if request_rate is None else _request_rate(request_rate),
    )
    changed = store.set_limits(tenant_id, limits)
    if changed is None:
        raise ValueError(f"tenant {tenant_id!r} is gone")
    return changed


def _max_active_jobs(value: str) -> int | None:
    if value.strip().lower() == DEFAULT:
        return None
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"--max-active-jobs takes a number (0: no bound) or 'default', not {value!r}") from None
    return TenantLimits(max_active_jobs=number).max_active_jobs


def _request_rate(value: str) -> str | None:
    word = value.strip().lower()
    if word == DEFAULT:
        return None
    if word == "none":
        return ""
    return TenantLimits(request_rate=value).request_rate


def _shown(own: object, in_force: object) -> str:
    text = "no limit" if in_force in (0, "") else str(in_force)
    return text if own is not None else f"{text} (service default)"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="videojobs tenants", description="Tenants and their own limits.")
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="every tenant with its keys and the limits in force")
    listing.add_argument("--json", action="store_true")
    change = sub.add_parser("set", help="set a tenant's own limits in place of the service's defaults")
    change.add_argument("tenant")
    change.add_argument("--max-active-jobs", metavar="N|default",
                        help="PENDING + RUNNING jobs at most (0: no bound; default: VIDEOJOBS_MAX_ACTIVE_JOBS_PER_TENANT)")
    change.add_argument("--request-rate", metavar="RATE|none|default",
                        help="calls of every kind, e.g. '500 per 10 seconds' (none: no limit; "
                             "default: VIDEOJOBS_TENANT_REQUEST_RATE)")
    change.add_argument("--create", action="store_true", help="create the tenant if it does not exist yet")
    change.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.action == "set" and args.max_active_jobs is None and args.request_rate is None:
        parser.error("set needs --max-active-jobs and/or --request-rate")

    settings = load_settings()
    repo = make_repository(settings)
    store = make_tenant_store(repo)
    defaults = service_defaults(settings)
    try:
        if args.action == "set":
            try:
                tenant = set_limits(store, args.tenant, args.max_active_jobs, args.request_rate, args.create)
            except ValueError as exc:
                print(f"videojobs tenants: {exc}", file=sys.stderr)
                return 2
            tenants = [tenant]
        else:
            tenants = store.list_tenants()
        active_keys = Counter(k.tenant_id for k in store.list_keys() if k.active)
        rows = [describe(t, defaults, active_keys[t.tenant_id]) for t in tenants]
        if args.json:
            print(json.dumps(rows[0] if args.action == "set" else rows))
            return 0
        for r in rows:
            print(f"{r['tenant']:<24} keys {r['active_keys']:<3} "
                  f"max active jobs {_shown(r['max_active_jobs'], r['max_active_jobs_in_force']):<28} "
                  f"request rate {_shown(r['request_rate'], r['request_rate_in_force'])}")
    finally:
        repo.dispose()
    return 0
