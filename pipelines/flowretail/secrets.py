"""Token rules and redaction: the one place that decides what a bearer token may be and how it is hidden.

``clean_token`` runs where a token enters the program (settings, client config, per-tenant tokens),
so a token that would break the Authorization header, or is too short to redact safely, stops the
program at start instead of failing every request with an error that quotes it.

``redact`` runs wherever an error text is formatted. It hides the token in the forms it takes
once it has been escaped on its way into a message (``repr``/bytes escapes such as ``\\n``, JSON
``\\/`` and ``\\u00xx``, percent- or form-encoding, doubled backslashes), and it cuts the text only
after redacting, so a token straddling the cut cannot leave a prefix behind.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Iterable

MIN_TOKEN_LENGTH = 8
REDACTED = "<redacted>"
# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-._~+/")
_TOKEN_CHAR = r"A-Za-z0-9\-._~+/="


def clean_token(raw: str) -> str:
    """The token without surrounding whitespace; ValueError (never quoting it) if it cannot be one.

    The messages say what is wrong and where, so a pasted token with a stray quote or line break
    can be fixed, but they never include the token or any part of it.
    """
    token = raw.strip()
    if not token:
        raise ValueError("is empty")
    body = token.rstrip("=")
    position = next((i for i, ch in enumerate(body, 1) if ch not in _B64TOKEN_CHARS), None if body else 1)
    if position is not None:
        raise ValueError(
            f"is not a valid bearer token: character {position} of {len(token)} is not allowed "
            "(RFC 6750 allows letters, digits, - . _ ~ + / and trailing =)"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"is {len(token)} characters long; a bearer token has at least {MIN_TOKEN_LENGTH}")
    return token


def redact(text: str, secrets: Iterable[str | None], limit: int | None = None) -> str:
    """``text`` with every secret (in any escaped form) replaced by ``<redacted>``, then cut to ``limit``.

    Matches are found on the whole text and the cut is made on the result, so a secret that
    straddles the cut is replaced, never shortened into a prefix. A secret shorter than
    ``MIN_TOKEN_LENGTH`` is replaced only where it stands alone (not inside a longer run of token
    characters), so a one-letter secret cannot garble ordinary words.
    """
    wanted = tuple(
        sorted({s for secret in secrets if secret for s in (secret, secret.strip()) if s}, key=len, reverse=True)
    )
    if not wanted:
        return text if limit is None else text[:limit]
    parts: list[str] = []
    size = 0
    position = 0
    for match in _pattern(wanted).finditer(text):
        if limit is not None and size + match.start() - position >= limit:
            break
        parts += (text[position : match.start()], REDACTED)
        size += match.start() - position + len(REDACTED)
        position = match.end()
    parts.append(text[position:] if limit is None else text[position : position + max(0, limit - size)])
    result = "".join(parts)
    return result if limit is None else result[:limit]


@functools.lru_cache(maxsize=64)
def _pattern(secrets: tuple[str, ...]) -> re.Pattern[str]:
    """One alternation over the secrets, longest first, each in all its escaped forms."""
    alternatives = []
    for secret in secrets:
        body = "".join(_char_forms(ch) for ch in secret)
        if len(secret) < MIN_TOKEN_LENGTH:
            body = f"(?<![{_TOKEN_CHAR}]){body}(?![{_TOKEN_CHAR}])"
        alternatives.append(body)
    return re.compile("|".join(alternatives))


def _char_forms(ch: str) -> str:
    """A regex for one character of a secret: itself or any way it is commonly escaped."""
    code = ord(ch)
    forms = [re.escape(ch), "(?i:" + "".join(f"%{byte:02x}" for byte in ch.encode("utf-8")) + ")"]
    escapes = [f"(?i:u{code:04x})"] if code < 0x10000 else []
    if code < 0x100:
        escapes.append(f"(?i:x{code:02x})")
    short = repr(ch)[1:-1]
    if short.startswith("\\") and len(short) == 2:
        escapes.append(re.escape(short[1]))
    if ch in "/\"'\\":
        escapes.append(re.escape(ch))
    forms.append(r"\\+(?:" + "|".join(escapes) + ")")
    if ch == " ":
        forms.append(r"\+")
    return "(?:" + "|".join(forms) + ")"
