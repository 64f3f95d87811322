"""Serving static files: finders that find nothing outside their directories (instead of
raising), and WhiteNoise as an async middleware.

Django's finders raise SuspiciousFileOperation for a path such as `../settings.py`, and the
static handlers in front of the app (runserver's and daphne's under DEBUG) only turn Http404
into a response, so `GET /static/../x` sent as-is was a 500. Finding nothing makes it a 404.
"""

from asgiref.sync import markcoroutinefunction
from django.contrib.staticfiles.finders import AppDirectoriesFinder, FileSystemFinder
from django.core.exceptions import SuspiciousFileOperation
from whitenoise.middleware import WhiteNoiseMiddleware


class SafeFileSystemFinder(FileSystemFinder):
    """STATICFILES_DIRS, with paths escaping their root not found."""

    def find_location(self, root, path, prefix=None):
        try:
            return super().find_location(root, path, prefix)
        except SuspiciousFileOperation:
            return None


class SafeAppDirectoriesFinder(AppDirectoriesFinder):
    """Each app's static/ directory, with paths escaping it not found."""

    def find_in_app(self, app, path):
        try:
            return super().find_in_app(app, path)
        except SuspiciousFileOperation:
            return None


class AsyncWhiteNoiseMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise's middleware, async-only.

    WhiteNoise 6 is sync-only, and one sync middleware makes Django run every request's chain
    through a worker thread and back (sync_to_async, then async_to_sync for the rest). Requests
    caught in that hop at shutdown also kept the process from exiting. Looking a path up is a
    dict read, so it needs no thread.
    """

    sync_capable = False
    async_capable = True

    def __init__(self, get_response):
        super().__init__(get_response)
        markcoroutinefunction(self)

    async def __call__(self, request):
        path = request.path_info
        static_file = self.find_file(path) if self.autorefresh else self.files.get(path)
        if static_file is not None:
            return self.serve(static_file, request)
        return await self.get_response(request)
