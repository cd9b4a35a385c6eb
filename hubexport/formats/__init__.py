"""Module format writers: the TF1 Hub format (versions 1 and 3) and TF2 SavedModels (4 and 5)."""

# Where a module carries a spec's class labels (one per line, line i for
# logit index i), relative to the module directory: assets/<this>.
LABELS_FILE = "labels.txt"
