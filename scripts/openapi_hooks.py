"""Value generators and prose rules for scripts/openapi-fuzz (loaded through
SCHEMATHESIS_HOOKS).

The API document names some formats JSON Schema cannot check (cron syntax,
IANA zones, duration text, webhook destinations, instants relative to now)
and states a few rules between fields in prose. This module teaches the
fuzzer the same: it generates values of those formats, and drops generated
bodies that break a prose rule, so that a request the document calls valid
is one the server must accept.
"""

import datetime
import itertools
import time

import schemathesis
from hypothesis import strategies as st

DAY_MS = 24 * 3_600_000
# The server's "at most 10 years ahead" (core::draft::MAX_FUTURE_MS).
MAX_FUTURE_MS = 10 * 366 * DAY_MS
# RetryPolicy defaults (core::action::RetryPolicy::default).
DEFAULT_BACKOFF_INITIAL_MS = 1_000
DEFAULT_BACKOFF_MAX_MS = 300_000
# Header names the runner sets (core::action::reserved_header).
RESERVED_HEADERS = {
    "idempotency-key", "content-length", "host", "transfer-encoding", "connection",
    "keep-alive", "te", "trailer", "upgrade",
}


def instant(low_ms, high_ms):
    """RFC 3339 instants from now + low to now + high, now read when drawn."""
    def at(offset_ms):
        now_ms = time.time() * 1000
        moment = datetime.datetime.fromtimestamp((now_ms + offset_ms) / 1000, datetime.timezone.utc)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return st.integers(low_ms, high_ms).map(at)


def amounts(units):
    return st.one_of(*[st.integers(low, high).map(lambda n, u=unit: f"{n}{u}") for unit, low, high in units])


# fireAt and startAt: from an hour to a year ahead (fireAt must not be older
# than the past-fire tolerance when sent, which may be a while after it was
# drawn, nor more than 10 years ahead).
schemathesis.openapi.format("date-time", instant(3_600_000, 365 * DAY_MS))
# endAt: never before the first slot, which is at most 10 years ahead.
schemathesis.openapi.format("minoots-end-instant", instant(MAX_FUTURE_MS + 2 * DAY_MS, MAX_FUTURE_MS + 400 * DAY_MS))
schemathesis.openapi.format(
    "minoots-duration",
    st.one_of(
        amounts([("ms", 1, 100_000), ("s", 1, 100_000), ("m", 1, 10_000), ("h", 1, 1_000), ("d", 1, 365)]),
        st.sampled_from(["1h 30m", "2m 5s", "1d 12h"]),
    ),
)
schemathesis.openapi.format(
    "minoots-period",
    st.one_of(
        amounts([("ms", 10, 100_000), ("s", 1, 100_000), ("m", 1, 10_000), ("h", 1, 1_000), ("d", 1, 365)]),
        st.sampled_from(["1h 30m", "2m 5s"]),
    ),
)


def cron_field(choices):
    return st.sampled_from(choices)


# Every expression drawn has a slot within a year (days of month up to 28).
_cron5 = st.tuples(
    cron_field(["*", "0", "*/5", "15", "0-30", "1,2,3"]),
    cron_field(["*", "0", "12", "9-17", "*/2"]),
    cron_field(["*", "1", "15", "1-28", "*/7"]),
    cron_field(["*", "1", "6", "1-6", "*/3"]),
    cron_field(["*", "1-5", "0", "6"]),
).map(" ".join)
schemathesis.openapi.format(
    "minoots-cron",
    st.one_of(
        _cron5,
        st.tuples(cron_field(["0", "*/10", "*"]), _cron5).map(" ".join),
        st.sampled_from(["@hourly", "@daily", "@weekly", "@monthly", "@yearly"]),
    ),
)
schemathesis.openapi.format(
    "minoots-time-zone",
    st.sampled_from(
        ["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Australia/Sydney", "Asia/Kolkata", "Pacific/Chatham"]
    ),
)
# Public destinations: the fuzzed server allows no private ones, and resolves
# names only when it sends (which it cannot do from here).
schemathesis.openapi.format(
    "minoots-webhook-url",
    st.sampled_from(["https://example.com/hook", "https://hooks.example.org/minoots", "http://example.net:8080/cb"]),
)
_action_ids = itertools.count(1)
# Unique within a bundle, as the document requires.
schemathesis.openapi.format("minoots-action-id", st.builds(lambda: f"act-{next(_action_ids)}"))


def _timers(body):
    if not isinstance(body, dict):
        return []
    if isinstance(body.get("timers"), list):
        return [t for t in body["timers"] if isinstance(t, dict)]
    return [body]


def _bundle_keeps_prose_rules(bundle):
    if not isinstance(bundle, dict):
        return True
    actions = bundle.get("actions")
    if isinstance(actions, list):
        ids = [
            a.get("id") if isinstance(a, dict) and a.get("id") is not None else f"action-{i + 1}"
            for i, a in enumerate(actions)
        ]
        if len({repr(i) for i in ids}) != len(ids):
            return False  # "id: unique within the bundle"
        for action in actions:
            params = action.get("parameters") if isinstance(action, dict) else None
            headers = params.get("headers") if isinstance(params, dict) else None
            if isinstance(headers, dict):
                for name in headers:
                    lower = name.lower()
                    if lower in RESERVED_HEADERS or lower.startswith(("minoots-", "proxy-")):
                        return False  # "names the runner sets are refused"
    retry = bundle.get("retryPolicy")
    if isinstance(retry, dict):
        numbers = (int, float)
        initial = retry.get("backoffInitialMs")
        initial = DEFAULT_BACKOFF_INITIAL_MS if initial is None else initial
        ceiling = retry.get("backoffMaxMs")
        if isinstance(initial, numbers) and (ceiling is None or isinstance(ceiling, numbers)):
            ceiling = max(DEFAULT_BACKOFF_MAX_MS, initial) if ceiling is None else ceiling
            if ceiling < initial:
                return False  # "backoffMaxMs must not be below backoffInitialMs"
    return True


def _header(case, name):
    for key, value in (case.headers or {}).items():
        if key.lower() == name.lower():
            return value
    return None


def _unix_ms(text):
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000
    except (AttributeError, TypeError, ValueError):
        return None


def _instants_within_reach(timer):
    """"fireAt ... at most 10 years ahead", "an older one [than the past-fire
    tolerance, 60 s] is a 400"; "startAt ... at most 10 years ahead"."""
    now_ms = time.time() * 1000
    latest_ms = now_ms + MAX_FUTURE_MS - DAY_MS
    for field in ("fireAt", "startAt"):
        at_ms = _unix_ms(timer.get(field))
        if at_ms is not None and at_ms > latest_ms:
            return False
    fire_at_ms = _unix_ms(timer.get("fireAt"))
    return fire_at_ms is None or fire_at_ms > now_ms - 30_000


@schemathesis.hook
def filter_case(context, case):
    timers = _timers(case.body)
    if not all(_bundle_keeps_prose_rules(t.get("actionBundle")) for t in timers):
        return False
    if not all(_instants_within_reach(t) for t in timers):
        return False
    # "Idempotency-Key: same as the body's idempotencyKey (400 if both are given and differ)"
    header = _header(case, "Idempotency-Key")
    if header is not None and isinstance(case.body, dict):
        key = case.body.get("idempotencyKey")
        if key is not None and key != header:
            return False
    return True
