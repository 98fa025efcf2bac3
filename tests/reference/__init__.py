"""Reference implementations run in environments of their own (see reference_python)."""
