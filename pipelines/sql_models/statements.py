"""Check that a rendered model is exactly one SELECT statement, without a database.

A model is wrapped into ``CREATE VIEW ... AS <model>``; a second statement would either fail late
inside the database or, worse, run as a side effect. The scanner follows PostgreSQL's lexical rules
for comments (nested ``/* */``), string constants (``''`` doubling, ``E''`` backslash escapes),
quoted identifiers and dollar-quoted strings, so a ``;`` or keyword inside any of them is ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipelines.sql_models.errors import ModelStatementError

_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")
_FIRST_WORD = re.compile(r"[\s(]*([A-Za-z_]+)")
# A data-modifying statement can hide in a WITH clause or subquery: it always follows a "(".
_DATA_MODIFYING = re.compile(r"\(\s*(INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)
ALLOWED_FIRST_KEYWORDS = ("SELECT", "WITH")


class _UnterminatedError(ValueError):
    """A comment, string or quoted identifier runs to the end of the text."""


def _is_identifier_char(char: str) -> bool:
    return char != "" and (char.isalnum() or char in "_$")


def _end_of_quoted(text: str, start: int, quote: str, backslash_escapes: bool) -> int:
    """Index just past the closing quote of the literal or identifier opening at ``start``."""
    index = start + 1
    while index < len(text):
        char = text[index]
        if backslash_escapes and char == "\\":
            index += 2
            continue
        if char == quote:
            if text.startswith(quote * 2, index):
                index += 2
                continue
            return index + 1
        index += 1
    what = "quoted identifier" if quote == '"' else "string constant"
    raise _UnterminatedError(f"unterminated {what}")


def _end_of_block_comment(text: str, start: int) -> int:
    depth = 0
    index = start
    while index < len(text):
        if text.startswith("/*", index):
            depth += 1
            index += 2
        elif text.startswith("*/", index):
            depth -= 1
            index += 2
            if depth == 0:
                return index
        else:
            index += 1
    raise _UnterminatedError("unterminated /* comment")


def code_skeleton(text: str) -> str:
    """``text`` with comments, string constants and quoted identifiers blanked to spaces.

    The result has the same length as ``text``, so positions found in it (semicolons, keywords)
    are positions in the original.
    """
    chars = list(text)
    index = 0

    def blank(start: int, end: int) -> None:
        for position in range(start, end):
            if chars[position] != "\n":
                chars[position] = " "

    while index < len(text):
        char = text[index]
        preceding = text[index - 1] if index > 0 else ""
        if text.startswith("--", index):
            newline = text.find("\n", index)
            end = len(text) if newline == -1 else newline
        elif text.startswith("/*", index):
            end = _end_of_block_comment(text, index)
        elif char == "'":
            # E'...' (not the tail of an identifier such as name'...') takes backslash escapes.
            escape_string = (
                preceding != "" and preceding in "eE" and not _is_identifier_char(text[index - 2] if index > 1 else "")
            )
            end = _end_of_quoted(text, index, "'", backslash_escapes=escape_string)
        elif char == '"':
            end = _end_of_quoted(text, index, '"', backslash_escapes=False)
        elif char == "$" and not _is_identifier_char(preceding) and (tag := _DOLLAR_TAG.match(text, index)):
            closing = text.find(tag.group(0), tag.end())
            if closing == -1:
                raise _UnterminatedError("unterminated dollar-quoted string")
            end = closing + len(tag.group(0))
        else:
            index += 1
            continue
        blank(index, end)
        index = end
    return "".join(chars)


def single_select_body(sql_text: str, *, path: Path, label: str) -> str:
    """The model's one statement without a trailing ``;``; raises naming the file otherwise.

    A trailing semicolon is tolerated (and dropped) because it is the most common harmless habit;
    anything after it other than whitespace and comments counts as a second statement.
    """
    try:
        skeleton = code_skeleton(sql_text)
    except _UnterminatedError as error:
        raise ModelStatementError(f"{label}: {error}", (path,)) from error
    boundaries = [index for index, char in enumerate(skeleton) if char == ";"]
    starts = [0, *(index + 1 for index in boundaries)]
    ends = [*boundaries, len(skeleton)]
    statements = [(start, end) for start, end in zip(starts, ends, strict=True) if skeleton[start:end].strip()]
    if not statements:
        raise ModelStatementError(f"{label}: contains no SQL statement; a model must be one SELECT", (path,))
    if len(statements) > 1:
        raise ModelStatementError(
            f"{label}: contains {len(statements)} SQL statements; a model must be exactly one SELECT",
            (path,),
        )
    start, end = statements[0]
    statement = skeleton[start:end]
    first_word = _FIRST_WORD.match(statement)
    keyword = first_word.group(1).upper() if first_word else statement.strip()[:20]
    if keyword not in ALLOWED_FIRST_KEYWORDS:
        raise ModelStatementError(f"{label}: must be a SELECT or WITH statement, found {keyword}", (path,))
    modifying = _DATA_MODIFYING.search(statement)
    if modifying:
        raise ModelStatementError(
            f"{label}: contains a data-modifying {modifying.group(1).upper()}; a model must only read",
            (path,),
        )
    return sql_text[start:end].strip()
