"""Errors that carry a message fit to show a person as it is (CLI line, HTTP 4xx body)."""


class MonoscopeError(Exception):
    """Base class: bad input or an unsupported artefact, never a bug."""


class UnsupportedModelError(MonoscopeError):
    """The model's architecture has no adapter."""


class SiteError(MonoscopeError):
    """A hook site name is malformed or lies outside the model."""


class SaeFormatError(MonoscopeError):
    """An SAE file is missing, malformed, or does not fit the model it is attached to."""


class SteeringError(MonoscopeError):
    """A steering spec refers to something that does not exist or is out of range."""
