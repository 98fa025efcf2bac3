"""Database layer: schema (models.py), engines and migrations (engine.py), reads (queries.py,
search.py) and bulk writes (store.py). Imports no torch, web or pipeline code."""
