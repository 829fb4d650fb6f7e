"""Errors of the SQL model runner.

Every error names the file(s) at fault: whoever reads a failed run log should be able to open the
right model or ``schema.yml`` without grepping for a model name.
"""

from __future__ import annotations

from pathlib import Path


class SqlModelError(Exception):
    """Base class: something is wrong with the model project or with building it."""

    def __init__(self, message: str, paths: tuple[Path, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.paths = paths


class ModelDiscoveryError(SqlModelError):
    """A file sits where no model may live, or its name cannot be a model name."""


class DuplicateModelError(SqlModelError):
    """Two files define a model of the same name."""


class ModelTemplateError(SqlModelError):
    """The Jinja of a model does not render (syntax error, unknown variable, bad ref/source call)."""


class ModelStatementError(SqlModelError):
    """A model is not exactly one SELECT (or WITH ... SELECT) statement."""


class ModelConfigError(SqlModelError):
    """A ``config(...)`` call holds an unknown key or a bad value."""


class UnknownRefError(SqlModelError):
    """A model refs a model that does not exist."""


class UnknownSourceError(SqlModelError):
    """A model reads a source table that ``schema.yml`` does not declare."""


class DependencyCycleError(SqlModelError):
    """Models ref each other in a cycle."""


class SchemaFileError(SqlModelError):
    """``schema.yml`` is malformed or documents something that does not exist."""


class UnknownModelError(SqlModelError):
    """A selection names a model the project does not have."""


class ModelBuildError(SqlModelError):
    """The database rejected a model; the previously built relation is untouched."""


class DataTestError(SqlModelError):
    """The database could not run a data test (as opposed to the test finding failing rows)."""
