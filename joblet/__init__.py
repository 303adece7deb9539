"""joblet: isolated jobs with real network isolation, driven through Redis and Celery."""

__version__ = "0.1.0"
