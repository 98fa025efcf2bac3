"""Pure torch/numpy core: models and hook sites, SAEs, steering, generation, inspection.

Nothing here imports the web, database or pipeline layers (enforced by tests/unit/test_layers.py).
"""
