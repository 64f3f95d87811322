"""Distributed mode, worker side: a Celery worker that hosts engines and streams replies."""
