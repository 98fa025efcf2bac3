"""Auto-interpretation: explainers that label features and scorers that say how far to trust a
label. Works on evidence read from the database (app.db) and, for scorers that need fresh
activations, on the resident model (app.core)."""
