"""Names that models and SAEs are known by in the database and in URLs (/{model}/{sae}/...).

A name is one URL path segment: letters, digits, '.', '_' and '-', starting with a letter or digit,
so that no name can be '.', '..' or carry a '/'.
"""

import re

from app.core.errors import MonoscopeError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def url_name(text: str, fallback: str) -> str:
    """A name made from a path's last part, for when nobody chose one."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).lstrip("._-")[:100].rstrip("-")
    return name or fallback


def checked_name(name: str) -> str:
    """A name somebody chose; refused when it would not be one safe URL segment."""
    if not _NAME.fullmatch(name):
        raise MonoscopeError(
            f"bad name {name!r}: use up to 100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name
