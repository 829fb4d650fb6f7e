"""Fault injection: scripted outcomes, random fault families, the rate limiter and spec-breaking bodies.

A client is only as good as the failures it was tested against, so the simulator can produce each
failure a real installation (or the proxies in front of it) produces: throttling with every
``Retry-After`` style, 5xx, dropped connections, cut-off bodies, slow answers, HTML error pages,
broken encodings and bodies that break the spec in one precise way.
"""

from __future__ import annotations

import copy
import email.utils
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from pipelines.flowretail.content_coding import encode_body
from pipelines.flowretail.paging import MAX_PAGES
from pipelines.flowretail.simulator.config import FaultConfig

STATUS_OUTCOMES = frozenset({"429", "500", "502", "503", "504", "400", "401", "404"})
# "bomb": a valid answer behind FaultConfig.bomb_bytes of whitespace, compressed (a decompression bomb).
REPLACING_BODY_OUTCOMES = frozenset({"html", "non_utf8", "bomb"})
LIST_BODY_OUTCOMES = frozenset(
    {
        "missing_field",
        "wrong_type",
        "bad_enum",
        "no_paging",
        "total_too_low",
        "oversized_page",
        "duplicate_items",
        "total_too_high",
        "too_many_pages",
    }
)
# "total_too_high": a totalCount of 10^12. "too_many_pages": pages of one item and a total that
# makes one page more than a client scan may take.
HUGE_TOTAL_COUNT = 10**12
OUTCOMES = STATUS_OUTCOMES | REPLACING_BODY_OUTCOMES | LIST_BODY_OUTCOMES | {"drop", "truncate"}
RANDOM_ERROR_STATUSES = (500, 502, 503, 504)
SCRIPTED_RETRY_AFTER_SECONDS = 1.0

_STATUS_MESSAGES = {
    400: "bad request (scripted)",
    401: "unauthorized: the access token is missing, invalid or revoked",
    404: "not found (scripted)",
    429: "too many requests: slow down",
    500: "internal server error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
}
HTML_BODY = (
    b"<!DOCTYPE html>\n<html><head><title>503 Service Temporarily Unavailable</title></head>"
    b"<body><h1>Flow Retail is down for maintenance</h1><p>Please try again later.</p></body></html>\n"
)


class SimulatedConnectionDrop(httpx.RemoteProtocolError):
    """Raised after the response started, so the server closes the socket mid-response.

    It subclasses ``httpx.RemoteProtocolError`` so that, in-process through ``httpx.ASGITransport``
    (which re-raises app exceptions), the client sees the same transport error as on the wire.
    """


def _split(outcome: str) -> tuple[str, float | None]:
    """``slow:1.5`` -> (``slow``, 1.5); refuses arguments that are not finite seconds >= 0."""
    name, _, argument = outcome.partition(":")
    if not argument:
        return name, None
    try:
        value = float(argument)
    except ValueError:
        raise ValueError(f"outcome {outcome!r}: {argument!r} is not a number of seconds") from None
    if value < 0 or not math.isfinite(value):
        raise ValueError(f"outcome {outcome!r}: seconds must be a finite number >= 0")
    return name, value


def check_outcome(outcome: str) -> None:
    """Refuse an unknown scripted outcome up front, listing the known ones."""
    name, argument = _split(outcome)
    if name == "slow" and argument is not None:
        return
    if name == "429" or (name in OUTCOMES and argument is None):
        return
    known = ", ".join(sorted(OUTCOMES))
    raise ValueError(f"unknown scripted outcome {outcome!r}; use one of {known}, slow:<seconds> or 429:<seconds>")


@dataclass
class Decision:
    """What to do with one request instead of (or on top of) answering it normally."""

    status: int | None = None
    retry_after: float | None = None
    drop: bool = False
    truncate: bool = False
    delay: float = 0.0
    body_fault: str | None = None
    scripted: str | None = None

    @property
    def clean(self) -> bool:
        """No fault at all: only clean answers trigger the data-changing faults (mutate/delete)."""
        return self.status is None and not self.drop and not self.truncate and self.body_fault is None


def scripted_decision(outcome: str) -> Decision:
    """Translate one scripted outcome."""
    name, argument = _split(outcome)
    decision = Decision(scripted=outcome)
    if name == "slow":
        decision.delay = argument or 0.0
    elif name == "429":
        decision.status = 429
        decision.retry_after = SCRIPTED_RETRY_AFTER_SECONDS if argument is None else argument
    elif name in STATUS_OUTCOMES:
        decision.status = int(name)
    elif name == "drop":
        decision.drop = True
    elif name == "truncate":
        decision.truncate = True
    else:
        decision.body_fault = name
    return decision


class FaultEngine:
    """Run-time side of a ``FaultConfig``: RNG, token bucket and request counter.

    The engine follows the live config object: when a test swaps ``state.faults`` for a new object
    (or changes ``revoke_token_after`` or ``rate_limit_rps``), the affected counters start afresh,
    so "revoke after 3 requests" means three requests from the moment it was set.
    """

    def __init__(self) -> None:
        self._owner: FaultConfig | None = None
        self._rng = random.Random(0)
        self._revoke_setting: int | None = None
        self._requests_since_revoke_set = 0
        self._rate: float | None = None
        self._tokens = 0.0
        self._refilled = 0.0

    def _follow(self, faults: FaultConfig) -> None:
        """Reset counters and the RNG when the live FaultConfig object or its limits change."""
        if faults is not self._owner:
            self._owner = faults
            self._rng = random.Random(faults.seed)
            self._revoke_setting = faults.revoke_token_after
            self._requests_since_revoke_set = 0
            self._rate = None
        if faults.revoke_token_after != self._revoke_setting:
            self._revoke_setting = faults.revoke_token_after
            self._requests_since_revoke_set = 0
        if faults.rate_limit_rps != self._rate:
            self._rate = faults.rate_limit_rps
            self._tokens = max(1.0, faults.rate_limit_rps or 0.0)
            self._refilled = time.monotonic()

    def token_revoked(self, faults: FaultConfig) -> bool:
        """Count this request; True once more than ``revoke_token_after`` requests were seen."""
        self._follow(faults)
        self._requests_since_revoke_set += 1
        limit = faults.revoke_token_after
        return limit is not None and self._requests_since_revoke_set > limit

    def throttle(self, faults: FaultConfig) -> float | None:
        """Token bucket over all requests: None when allowed, else seconds until a token is free."""
        self._follow(faults)
        rate = faults.rate_limit_rps
        if rate is None:
            return None
        now = time.monotonic()
        capacity = max(1.0, rate)
        self._tokens = min(capacity, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / rate

    def random_decision(self, faults: FaultConfig, operation_id: str | None) -> Decision:
        """Draw the random fault families for one request (only for the configured operations)."""
        self._follow(faults)
        decision = Decision()
        if faults.faulty_operations is not None and operation_id not in faults.faulty_operations:
            return decision
        rng = self._rng
        if faults.latency_ms or faults.latency_jitter_ms:
            decision.delay = (faults.latency_ms + rng.uniform(0.0, faults.latency_jitter_ms)) / 1000.0
        if faults.error_rate and rng.random() < faults.error_rate:
            decision.status = rng.choice(RANDOM_ERROR_STATUSES)
        elif faults.drop_rate and rng.random() < faults.drop_rate:
            decision.drop = True
        elif faults.truncate_rate and rng.random() < faults.truncate_rate:
            decision.truncate = True
        return decision


def retry_after_header(style: str, seconds: float) -> str | None:
    """The ``Retry-After`` value in the configured style (whole seconds, HTTP-date, or none)."""
    if style == "none":
        return None
    if style == "http-date":
        return email.utils.formatdate(math.ceil(time.time() + seconds), usegmt=True)
    if style == "superscript":
        # Sent as UTF-8 bytes (header values reach the ASGI server as latin-1 text).
        return str(math.ceil(seconds)).translate(_SUPERSCRIPT_DIGITS).encode("utf-8").decode("latin-1")
    if style == "garbage":
        return "in a little while"
    return str(math.ceil(seconds))


_SUPERSCRIPT_DIGITS = str.maketrans("0123456789", "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")


def status_message(status: int) -> str:
    """The message of a status answered by a fault (never mentions the request)."""
    return _STATUS_MESSAGES.get(status, "error")


def break_body(body: dict[str, Any], fault: str, is_list: bool, is_members: bool) -> dict[str, Any]:
    """Break a valid JSON body in exactly one way; faults that do not apply leave it unchanged.

    ``oversized_page`` is handled by the caller, which needs one item more from the data.
    """
    body = copy.deepcopy(body)
    target: dict[str, Any] | None = (body["items"][0] if body["items"] else None) if is_list else body
    if fault == "missing_field" and target is not None:
        target.pop("email" if is_members else "name", None)
    elif fault == "wrong_type" and target is not None:
        if is_members:
            target["paymentTerms"] = "30"
        else:
            target["name"] = 12345
    elif fault == "bad_enum" and target is not None and is_members:
        target["customerType"] = "ALIEN"
    elif fault == "no_paging" and is_list:
        del body["paging"]
    elif fault == "total_too_low" and is_list:
        body["paging"]["totalCount"] = len(body["items"]) - 1
    elif fault == "total_too_high" and is_list:
        body["paging"]["totalCount"] = HUGE_TOTAL_COUNT
    elif fault == "too_many_pages" and is_list:
        del body["items"][1:]
        body["paging"]["pageSize"] = 1
        body["paging"]["totalCount"] = MAX_PAGES + 1
    elif fault == "duplicate_items" and is_list and body["items"]:
        items = body["items"]
        if len(items) >= 2:
            items[-1] = copy.deepcopy(items[0])
        else:
            items.append(copy.deepcopy(items[0]))
    return body


def bomb_body(payload: bytes, size: int, coding: str) -> bytes:
    """``payload`` after ``size`` bytes of whitespace (still valid JSON), compressed with ``coding``."""
    return encode_body(b" " * size + payload, coding)


def non_utf8_body(payload: bytes) -> bytes:
    """A JSON-looking body in Latin-1, with at least one byte that is not valid UTF-8."""
    text = payload.decode("utf-8")
    closing = text.rstrip().rfind("}")
    if closing <= 0 or not text[1:closing].strip():
        text = '{"note": "Bl\u00e5b\u00e6rsyltet\u00f8y"}'
    else:
        text = text[:closing] + ', "note": "Bl\u00e5b\u00e6rsyltet\u00f8y"' + text[closing:]
    return text.encode("latin-1", errors="replace")
