"""FastAPI app factory, routers per page family, and their view models."""
