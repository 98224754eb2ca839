"""The site learning loop: signed reports matched to studies, drafts scored against them, data sets
exported for retraining, and the model registry's promotion gate."""
