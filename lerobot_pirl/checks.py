"""Small validation helpers shared by the config classes (one wording for one kind of error)."""

from __future__ import annotations

from collections.abc import Iterable


def check_choice(name: str, value, choices: Iterable) -> None:
    """Raise ``ValueError`` naming the field when ``value`` is not one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
