"""Module format writers: the TF1 Hub format (versions 1 and 3) and TF2 SavedModels (4 and 5)."""
