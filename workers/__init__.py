"""Background work: the Celery app, its tasks, and the in-process runner for the embedded mode."""
