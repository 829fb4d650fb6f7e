"""Token rules and redaction (pure functions, no I/O)."""

from __future__ import annotations

import json
import re
from urllib.parse import quote, quote_plus

import h11
import pytest
from pydantic import SecretStr, ValidationError

from pipelines.flowretail.config import ClientConfig
from pipelines.flowretail.errors import BadRequestError
from pipelines.flowretail.secrets import MIN_TOKEN_LENGTH, REDACTED, clean_token, redact

TOKEN = "tok/Zq8+distinct_secret=="


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (TOKEN, TOKEN),
        (TOKEN + "\n", TOKEN),
        (f"  {TOKEN}\r\n", TOKEN),
        ("\tabcdefgh", "abcdefgh"),
        ("A-._~+/9", "A-._~+/9"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"),
    ],
)
def test_clean_token_strips_surrounding_whitespace(raw: str, clean: str) -> None:
    assert clean_token(raw) == clean


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "is empty"),
        (" \n ", "is empty"),
        ("abc\ndefghij", "is not a valid bearer token: character 4 of 11 is not allowed"),
        ("abcd efghij", "is not a valid bearer token: character 5 of 11 is not allowed"),
        ("abcdefgh\r\nX-Evil: 1", "is not a valid bearer token: character 9 of 19 is not allowed"),
        ('"abcdefghij"', "is not a valid bearer token: character 1 of 12 is not allowed"),
        ("abc=defghij", "is not a valid bearer token: character 4 of 11 is not allowed"),
        ("========", "is not a valid bearer token: character 1 of 8 is not allowed"),
        ("tökentoken", "is not a valid bearer token: character 2 of 10 is not allowed"),
        ("a" * (MIN_TOKEN_LENGTH - 1), f"is 7 characters long; a bearer token has at least {MIN_TOKEN_LENGTH}"),
    ],
)
def test_clean_token_refuses_without_quoting_the_token(raw: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        clean_token(raw)
    assert str(err.value).startswith(message)
    for part in raw.split():
        if len(part) >= 4:
            assert part not in str(err.value)


def test_the_client_config_cleans_the_token_and_never_shows_it() -> None:
    config = ClientConfig(base_url="http://127.0.0.1/v2", token=SecretStr(TOKEN + "\n"))
    assert config.token.get_secret_value() == TOKEN
    with pytest.raises(ValidationError) as err:
        ClientConfig(base_url="http://127.0.0.1/v2", token="short\nsecret-value")  # type: ignore[arg-type]
    assert "secret-value" not in str(err.value) and "short" not in str(err.value)


ESCAPED_FORMS = [
    TOKEN,
    repr(TOKEN + "\n"),
    repr(repr(TOKEN + "\n")),
    str((TOKEN + "\n").encode()),
    json.dumps(TOKEN),
    json.dumps(TOKEN).replace("/", "\\/"),
    json.dumps(TOKEN, ensure_ascii=True).replace("=", "\\u003d"),
    quote(TOKEN, safe=""),
    re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(TOKEN, safe="")),
    quote_plus(TOKEN),
    "tok\\x2fZq8+distinct_secret==",
]


@pytest.mark.parametrize("form", ESCAPED_FORMS)
@pytest.mark.parametrize("secret", [TOKEN, TOKEN + "\n"])
def test_redact_hides_every_escaped_form(form: str, secret: str) -> None:
    text = redact(f"before {form} after", [secret])
    assert "distinct" not in text
    assert text.startswith("before ") and text.endswith(" after")
    assert REDACTED in text


def test_the_h11_header_error_is_redacted() -> None:
    """The error h11 raised for a token with a trailing newline, as reported in issue 12."""
    with pytest.raises(h11.LocalProtocolError) as err:
        h11.Request(method="GET", target="/", headers=[("Host", "x"), ("Authorization", f"Bearer {TOKEN}\n")])
    assert "distinct" in str(err.value)
    for secret in (TOKEN, TOKEN + "\n"):
        assert redact(str(err.value), [secret]).startswith(f"Illegal header value b'Bearer {REDACTED}")


def test_redact_then_cut_leaves_no_prefix_of_a_token_straddling_the_cut() -> None:
    for start in range(280, 301):
        text = "x" * start + TOKEN + "y" * 50
        cut = redact(text, [TOKEN], limit=300)
        assert len(cut) == 300
        assert "tok" not in cut
        assert cut == (text[:start] + REDACTED + "y" * 50)[:300]


def test_redaction_that_shortens_the_text_cannot_pull_a_later_copy_under_the_cut() -> None:
    long_token = "T" * 60
    text = long_token * 10 + "gap" + long_token + "z" * 400
    cut = redact(text, [long_token], limit=300)
    assert "TT" not in cut
    assert cut == (REDACTED * 10 + "gap" + REDACTED + "z" * 400)[:300]


def test_short_secrets_never_garble_words() -> None:
    text = "connection to tenant-1 failed: t"
    assert redact(text, ["t"]) == "connection to tenant-1 failed: <redacted>"
    assert redact("the connection timed out", ["tion"]) == "the connection timed out"
    assert redact("Bearer abc!", ["abc"]) == "Bearer <redacted>!"


def test_redact_without_secrets_only_cuts() -> None:
    assert redact("x" * 10, [None, ""]) == "x" * 10
    assert redact("x" * 10, [], limit=4) == "xxxx"
    assert redact("<redacted> " + TOKEN, [TOKEN]) == "<redacted> <redacted>"


def test_an_error_is_redacted_in_its_message_and_every_text_attribute() -> None:
    error = BadRequestError("put-customer-groups-customers", 400, f"echo {TOKEN}", page=None)
    redacted = error.redacted(lambda text: redact(text, [TOKEN]))
    assert redacted is error
    assert str(error) == "put-customer-groups-customers: HTTP 400: echo <redacted>"
    assert error.detail == "echo <redacted>"
    assert error.status_code == 400
