"""The queue as the node sees it: the Celery app, queue and task names, publishing by name."""
