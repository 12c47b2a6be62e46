"""Hypothesis fuzzer for the gRPC JobService: random bytes and random field values for every method's
request, sent over a real channel to the real server. The answer is OK or a client error
(INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, RESOURCE_EXHAUSTED, UNAUTHENTICATED...), never
INTERNAL, UNKNOWN or DATA_LOSS.

Field values are drawn from each request message's descriptor (every scalar type at its edges, unknown
enum numbers, nested messages); job ids are sometimes those of real jobs, so the methods get past
the lookup.
"""

from __future__ import annotations

import math

import grpc
import hypothesis
import pytest
from google.protobuf.descriptor import FieldDescriptor as FD
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from tests.fuzz.conftest import MP4_HEAD, TALLY, examples
from videojobs.v1 import jobs_pb2

SERVICE = jobs_pb2.DESCRIPTOR.services_by_name["JobService"]
METHODS = {m.name: m for m in SERVICE.methods}
STREAMING = {name for name, m in METHODS.items() if m.client_streaming}
SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
REAL_JOB = "<a real job id>"

INT32 = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, -1, 1, 2**31 - 1, -(2**31)]))
INT64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, 2**63 - 1]))
UINT32, UINT64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
DOUBLE = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, 1e-320, 1e308, math.inf, -math.inf, math.nan]))
FLOAT = st.floats(width=32)
TEXT = st.one_of(st.text(max_size=80), st.sampled_from(["", ".", "..", "uploads/../inputs/x.mp4", "a\x00b", "x" * 10000,
                                                         "00000000-0000-0000-0000-000000000000", REAL_JOB,
                                                         REAL_JOB, "yolo", "uploads/fuzz/a.mp4"]))
SCALARS = {
    FD.TYPE_INT32: INT32, FD.TYPE_SINT32: INT32, FD.TYPE_SFIXED32: INT32,
    FD.TYPE_INT64: INT64, FD.TYPE_SINT64: INT64, FD.TYPE_SFIXED64: INT64,
    FD.TYPE_UINT32: UINT32, FD.TYPE_FIXED32: UINT32, FD.TYPE_UINT64: UINT64, FD.TYPE_FIXED64: UINT64,
    FD.TYPE_DOUBLE: DOUBLE, FD.TYPE_FLOAT: FLOAT, FD.TYPE_BOOL: st.booleans(), FD.TYPE_STRING: TEXT,
    FD.TYPE_BYTES: st.one_of(st.binary(max_size=2048), st.binary(max_size=2048).map(lambda b: MP4_HEAD + b)),
}


def _repeated(field: FD) -> bool:
    return field.is_repeated if hasattr(field, "is_repeated") else field.label == FD.LABEL_REPEATED


def field_value(field: FD, depth: int) -> st.SearchStrategy:
    if field.type == FD.TYPE_MESSAGE:
        return message_of(field.message_type, depth + 1)
    if field.type == FD.TYPE_ENUM:
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), INT32)
    return SCALARS[field.type]


def message_of(descriptor, depth: int = 0) -> st.SearchStrategy:
    """Messages of `descriptor`'s type with any subset of fields set to edge-case values."""
    from google.protobuf import message_factory

    cls = message_factory.GetMessageClass(descriptor)
    if depth > 3:
        return st.builds(cls)
    fields = list(descriptor.fields)

    @st.composite
    def build(draw):
        msg = cls()
        oneofs_done: set[str] = set()
        for field in draw(st.lists(st.sampled_from(fields), unique_by=lambda f: f.name, max_size=len(fields))
                          if fields else st.just([])):
            if field.containing_oneof is not None:
                if field.containing_oneof.name in oneofs_done:
                    continue
                oneofs_done.add(field.containing_oneof.name)
            if _repeated(field):
                values = draw(st.lists(field_value(field, depth), max_size=5))
                if field.type == FD.TYPE_MESSAGE:
                    for value in values:
                        getattr(msg, field.name).add().CopyFrom(value)
                else:
                    getattr(msg, field.name).extend(values)
            elif field.type == FD.TYPE_MESSAGE:
                getattr(msg, field.name).CopyFrom(draw(field_value(field, depth)))
            else:
                setattr(msg, field.name, draw(field_value(field, depth)))
        return msg

    return build()


@pytest.fixture(scope="module")
def channel(fuzz_stack):
    with grpc.insecure_channel(fuzz_stack.grpc_target) as ch:
        yield ch


@pytest.fixture(scope="module")
def real_job(fuzz_stack):
    job_id = fuzz_stack.submit()
    assert fuzz_stack.wait_final(job_id)["status"] == "COMPLETED"
    fuzz_stack.api.storage.save_bytes(MP4_HEAD, "uploads/fuzz/a.mp4")  # SubmitFromStorage can succeed too
    return job_id


def call_raw(channel, fuzz_stack, method: str, payloads: list[bytes], key: str | None) -> grpc.StatusCode:
    path = f"/{SERVICE.full_name}/{method}"
    metadata = (("authorization", key),) if key is not None else None
    try:
        if method in STREAMING:
            channel.stream_unary(path)(iter(payloads), timeout=30, metadata=metadata)
        else:
            channel.unary_unary(path)(payloads[0], timeout=30, metadata=metadata)
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        code = err.code()
        TALLY.rpc(f"grpc: {method}", code, err.details() or "")
        assert code not in SERVER_FAULTS, (method, code, err.details(), [p[:200] for p in payloads])
        return code


def keys(fuzz_stack) -> st.SearchStrategy:
    good = f"Bearer {fuzz_stack.key}"
    return st.sampled_from([good, good, good, good, None, "Bearer vjk_nope_nope", "Basic abc", good + "x"])


def _settings(default: int):
    return hypothesis.settings(max_examples=examples(default), deadline=None, database=None,
                               suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_random_bytes_are_a_client_error(channel, fuzz_stack, method):
    @given(payloads=st.lists(st.binary(max_size=512), min_size=1, max_size=4), key=keys(fuzz_stack))
    @_settings(40)
    def fuzz(payloads, key):
        code = call_raw(channel, fuzz_stack, method, payloads, key)
        if code is grpc.StatusCode.OK:
            TALLY.rpc(f"grpc: {method}", code)

    fuzz()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_random_field_values_are_answered_or_refused_cleanly(channel, fuzz_stack, real_job, method):
    request_type = METHODS[method].input_type

    def with_real_job(msg):
        for field in msg.DESCRIPTOR.fields:
            if field.type == FD.TYPE_STRING and not _repeated(field) and getattr(msg, field.name) == REAL_JOB:
                setattr(msg, field.name, real_job)
        return msg

    if method in STREAMING:  # a spec (or anything), then chunks (or anything)
        messages = st.lists(message_of(request_type), min_size=1, max_size=4)
    else:
        messages = message_of(request_type).map(lambda m: [m])

    @given(msgs=messages, key=keys(fuzz_stack))
    @_settings(60)
    def fuzz(msgs, key):
        payloads = [with_real_job(m).SerializeToString() for m in msgs]
        code = call_raw(channel, fuzz_stack, method, payloads, key)
        if code is grpc.StatusCode.OK:
            TALLY.rpc(f"grpc: {method}", code)

    fuzz()
