"""Keys, callers, the CANCELLED transition, callback URL rules and the webhook retry schedule."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.fakes import FakeJobRepository
from videojobs.api.auth import Authenticator
from videojobs.api.callbacks import check_callback_url
from videojobs.api.webhooks import WebhookPolicy
from videojobs.common.errors import IllegalTransition, InvalidCallbackUrl, Unauthenticated
from videojobs.common.job import Job, JobStatus
from videojobs.common.ports.tenants import TenantStore
from videojobs.common.job import utcnow
from videojobs.common.tenants import (
    ApiKeyRecord, Tenant, TenantLimits, bearer_token, hash_key, key_matches, key_prefix, new_key,
)


class MemoryTenants(TenantStore):
    def __init__(self) -> None:
        self.keys: dict[str, ApiKeyRecord] = {}
        self.lookups = 0

    def ensure_tenant(self, tenant_id):
        raise NotImplementedError

    def get_tenant(self, tenant_id):
        return None

    def list_tenants(self):
        return []

    def set_limits(self, tenant_id, limits):
        return None

    def add_key(self, record):
        self.keys[record.prefix] = record

    def find_key(self, prefix):
        self.lookups += 1
        return self.keys.get(prefix)

    def list_keys(self):
        return list(self.keys.values())

    def revoke_key(self, prefix):
        from dataclasses import replace

        self.keys[prefix] = replace(self.keys[prefix], revoked_at=utcnow())
        return True


def test_keys_are_random_prefixed_and_only_their_hash_matches():
    key, prefix = new_key()
    other, _ = new_key()
    assert key.startswith(f"vjk_{prefix}_") and key_prefix(key) == prefix and key != other
    record = ApiKeyRecord(prefix, "alpha", "", hash_key(key, "pepper"), utcnow())
    assert key not in record.key_hash and key_matches(key, record, "pepper")
    assert not key_matches(key, record, "another pepper") and not key_matches(other, record, "pepper")
    assert key_prefix("vjk_short_x") is None and key_prefix("") is None
    assert bearer_token("Bearer abc") == "abc" and bearer_token("bearer  abc ") == "abc"
    assert bearer_token("abc") == "abc" and bearer_token("Basic a b") is None and bearer_token(None) is None


def test_authenticator_resolves_the_tenant_and_forgets_revoked_keys_after_its_cache():
    store = MemoryTenants()
    key, prefix = new_key()
    store.add_key(ApiKeyRecord(prefix, "alpha", "", hash_key(key, "p"), utcnow()))
    auth = Authenticator("keys", store, "p", cache_seconds=0.0)
    assert auth.authenticate(f"Bearer {key}").tenant_id == "alpha"
    altered = key[:-1] + ("A" if key[-1] != "A" else "B")  # one character off
    for bad in (None, "", "Bearer nonsense", f"Bearer {altered}", f"Bearer {new_key()[0]}"):
        with pytest.raises(Unauthenticated) as err:
            auth.authenticate(bad)
        if bad:
            assert bad.split()[-1] not in str(err.value)
    store.revoke_key(prefix)
    with pytest.raises(Unauthenticated):
        auth.authenticate(f"Bearer {key}")
    assert Authenticator("none", None).authenticate(None).tenant_id == "default"


def test_cancel_is_a_final_transition_with_a_notice():
    job = Job.submit("yolo", tenant_id="alpha", callback_url="https://example.com/h")
    job.cancel()
    assert job.status is JobStatus.CANCELLED and job.status.is_final and job.finished_at
    assert [e.status for e in job.events] == [JobStatus.CANCELLED]
    assert job.events[0].payload()["type"] == "job.cancelled"
    with pytest.raises(IllegalTransition) as err:
        job.cancel()
    assert err.value.extensions() == {"job_status": "CANCELLED"}
    running = Job.submit("yolo")
    running.start("w", timedelta(seconds=30))
    running.cancel()
    assert running.status is JobStatus.CANCELLED and running.lease_expires_at is None
    assert running.events == []  # no callback URL, no notice
    with pytest.raises(IllegalTransition):
        running.complete("results/x.json")


def test_a_cancelled_job_is_not_written_over_by_a_guarded_save():
    repo = FakeJobRepository()
    job = Job.submit("yolo")
    repo.add(job)
    worker_copy = repo.get(job.job_id)
    worker_copy.start("w", timedelta(seconds=30))
    assert repo.save(worker_copy, JobStatus.PENDING, 0)
    owner_copy = repo.get(job.job_id)
    owner_copy.cancel()
    assert repo.save(owner_copy, JobStatus.RUNNING, 1)
    worker_copy.complete("results/x.json")
    assert repo.save(worker_copy, JobStatus.RUNNING, 1) is False
    assert repo.get(job.job_id).status is JobStatus.CANCELLED


@pytest.mark.parametrize("url, allow_private, ok", [
    ("http://169.254.169.254/latest/meta-data", False, False),
    ("http://169.254.169.254/", True, False),
    ("http://[::ffff:169.254.169.254]/", True, False),
    ("http://127.0.0.1:8000/h", False, False),
    ("http://127.0.0.1:8000/h", True, True),
    ("http://192.168.1.10/", False, False),
    ("http://100.64.0.1/", False, False),
    ("http://0.0.0.0/", True, False),
    ("http://224.0.0.1/", True, False),
    ("http://93.184.216.34/hook", False, True),
    ("https://[2606:2800:220:1:248:1893:25c8:1946]/hook", False, True),
    ("file:///etc/passwd", True, False),
    ("http://a b/", True, False),
])
def test_callback_url_rules(url, allow_private, ok):
    if ok:
        check_callback_url(url, allow_private)
    else:
        with pytest.raises(InvalidCallbackUrl):
            check_callback_url(url, allow_private)


def test_webhook_retries_back_off_for_about_an_hour():
    policy = WebhookPolicy(retry_base_seconds=5.0, give_up_after_seconds=3600.0)
    elapsed, attempts = 0.0, 1
    while elapsed + policy.retry_delay(attempts).total_seconds() <= policy.give_up_after_seconds:
        elapsed += policy.retry_delay(attempts).total_seconds()
        attempts += 1
    assert [policy.retry_delay(n).total_seconds() for n in (1, 2, 3)] == [5, 10, 20]
    assert policy.retry_delay(20) == timedelta(minutes=15)
    assert 9 <= attempts <= 14 and 2400 <= elapsed <= 3600, (attempts, elapsed)


def test_a_tenant_request_rate_is_checked_when_read_and_counts_tenants_apart():
    import pydantic

    from videojobs.api.quotas import TenantQuotas
    from videojobs.api.rates import TenantRequestRate
    from videojobs.common.config import Settings
    from videojobs.common.errors import TooManyRequests
    from videojobs.common.tenants import Caller

    with pytest.raises(pydantic.ValidationError, match="a request rate reads like '200 per 10 seconds'"):
        Settings(tenant_request_rate="fast")
    rate = TenantRequestRate(TenantQuotas.uniform(Settings(tenant_request_rate=" 2 per 60 seconds ").tenant_request_rate))
    alpha, beta = Caller("alpha"), Caller("beta")
    rate.admit(alpha)
    rate.admit(alpha)
    with pytest.raises(TooManyRequests) as refused:
        rate.admit(alpha)
    assert 1 <= refused.value.retry_after_seconds <= 60
    assert refused.value.extensions() == {"retry_after_seconds": refused.value.retry_after_seconds}
    rate.admit(beta)  # a window of its own
    unlimited = TenantRequestRate(TenantQuotas.uniform(""))
    for _ in range(1000):
        unlimited.admit(alpha)  # never refused


# -- tenants' own limits --------------------------------------------------------------------------------------
class TenantsWithLimits(MemoryTenants):
    """Tenants with limits of their own; `down` makes every read fail as an unreachable database does."""

    def __init__(self, **limits) -> None:
        super().__init__()
        self.tenants = {name: Tenant(name, "whsec_x", utcnow(), own) for name, own in limits.items()}
        self.reads = 0
        self.down = False

    def get_tenant(self, tenant_id):
        self.reads += 1
        if self.down:
            raise ConnectionError("database unreachable")
        return self.tenants.get(tenant_id)


def test_tenant_limits_are_checked_when_made_and_fill_in_the_services_defaults():
    with pytest.raises(ValueError, match="0 \\(no bound\\) to"):
        TenantLimits(max_active_jobs=-1)
    for bad in ("fast", "0 per second", "1/second;2/minute", "5 per " + "9" * 80 + " seconds"):
        with pytest.raises(ValueError, match="request rate"):
            TenantLimits(request_rate=bad)
    assert TenantLimits(request_rate=" 5/second ").request_rate == "5/second"
    defaults = TenantLimits(100, "200 per 10 seconds")
    assert TenantLimits().over(defaults) == defaults
    assert TenantLimits(0, None).over(defaults) == TenantLimits(0, "200 per 10 seconds")  # 0: no bound, its own
    assert TenantLimits(None, "").over(defaults) == TenantLimits(100, "")  # "": no limit, its own


def test_quotas_read_a_tenant_once_per_cache_period_and_hold_the_last_read_through_an_outage(monkeypatch):
    from videojobs.api import caching
    from videojobs.api.quotas import TenantQuotas

    now = [1000.0]
    monkeypatch.setattr(caching.time, "monotonic", lambda: now[0])
    store = TenantsWithLimits(alpha=TenantLimits(max_active_jobs=7), beta=TenantLimits())
    quotas = TenantQuotas(store, TenantLimits(2, "10 per 60 seconds"), cache_seconds=2.0)
    assert quotas.of("alpha") == TenantLimits(7, "10 per 60 seconds")
    assert quotas.of("beta") == quotas.of("nobody") == TenantLimits(2, "10 per 60 seconds")
    reads = store.reads
    now[0] += 1.9
    assert quotas.of("alpha").max_active_jobs == 7 and store.reads == reads  # from the cache
    store.tenants["alpha"] = Tenant("alpha", "whsec_x", utcnow(), TenantLimits(request_rate=""))
    now[0] += 0.2
    assert quotas.of("alpha") == TenantLimits(2, "") and store.reads == reads + 1  # the change, once the cache is old
    store.down = True
    now[0] += 5
    assert quotas.of("alpha") == TenantLimits(2, "")  # the last read holds
    assert quotas.of("gamma") == quotas.defaults  # never read: the service's


def test_each_tenant_is_held_to_its_own_request_rate():
    from videojobs.api.quotas import TenantQuotas
    from videojobs.api.rates import TenantRequestRate
    from videojobs.common.errors import TooManyRequests
    from videojobs.common.tenants import Caller

    store = TenantsWithLimits(slow=TenantLimits(request_rate="1 per 60 seconds"), free=TenantLimits(request_rate=""))
    rate = TenantRequestRate(TenantQuotas(store, TenantLimits(0, "3 per 60 seconds")))

    def admitted(tenant: str, calls: int) -> int:
        for n in range(calls):
            try:
                rate.admit(Caller(tenant))
            except TooManyRequests as refused:
                assert "per 60 second" in str(refused)
                return n
        return calls

    assert admitted("slow", 5) == 1
    assert admitted("other", 5) == 3  # the service's rate
    assert admitted("free", 500) == 500  # no limit of its own
