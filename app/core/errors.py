"""Errors that carry a message fit to show a person as it is (CLI line, HTTP 4xx body).

Each class names the HTTP status a web answer gives it; the app factory maps them all in one
handler, so routes raise these and never translate them one by one.
"""


class MonoscopeError(Exception):
    """Base class: bad input or an unsupported artefact, never a bug."""

    status = 400


class NotFoundError(MonoscopeError):
    """What was asked for (a feature, list, label, item) does not exist."""

    status = 404


class ForbiddenError(MonoscopeError):
    """The viewer may not change this (someone else's saved work)."""

    status = 403


class NotLoadedError(MonoscopeError):
    """The request needs a model or SAE this server has not loaded (or not harvested)."""

    status = 409


class UnsupportedModelError(MonoscopeError):
    """The model's architecture has no adapter."""


class SiteError(MonoscopeError):
    """A hook site name is malformed or lies outside the model."""


class SaeFormatError(MonoscopeError):
    """An SAE file is missing, malformed, or does not fit the model it is attached to."""


class SteeringError(MonoscopeError):
    """A steering spec refers to something that does not exist or is out of range."""
