"""Static file finders that find nothing outside their directories, instead of raising.

Django's finders raise SuspiciousFileOperation for a path such as `../settings.py`, and the
static handlers in front of the app (runserver's and daphne's under DEBUG) only turn Http404
into a response, so `GET /static/../x` sent as-is was a 500. Finding nothing makes it a 404.
"""

from django.contrib.staticfiles.finders import AppDirectoriesFinder, FileSystemFinder
from django.core.exceptions import SuspiciousFileOperation


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
