"""Offline jobs over core (and, later, the database): each a config dataclass plus a runner."""
