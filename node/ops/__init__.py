"""The operator's side: the admin CLI, read-only overviews, the demo."""
