"""Django's own middlewares, made to run their hooks on the event loop.

For an async request Django runs each MiddlewareMixin middleware's process_request and
process_response through sync_to_async: two thread hops per middleware, and a new executor thread
per request. That was more than half of what a cheap API request cost the web process (3.9 ms of
CPU for /health before, 2.3 ms after). These hooks only read and set headers, cookies and lazy
attributes, so they can run inline; the one that can touch the database, saving a session that
the request used, still goes to a thread.

MIDDLEWARE keeps Django's own dotted paths, because `check --deploy` looks the security
middlewares up by path and skips its HSTS and SSL checks when they seem missing. The ASGI entry
point (inference_platform.asgi) calls run_django_middleware_on_the_loop() before it builds the
handler; the sync test client never uses __acall__.
"""

from asgiref.sync import sync_to_async
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.security import SecurityMiddleware

# Whose process_request/process_response never block: headers (Security, XFrameOptions), URL
# resolving for slash redirects (Common), cookie tokens (Csrf: CSRF_USE_SESSIONS is off), lazy
# request.user (Authentication), and messages kept in a cookie or the in-memory session (Message).
NON_BLOCKING_HOOKS = (
    SecurityMiddleware,
    CommonMiddleware,
    CsrfViewMiddleware,
    AuthenticationMiddleware,
    MessageMiddleware,
    XFrameOptionsMiddleware,
)


async def _hooks_inline(self, request):
    response = self.process_request(request) if hasattr(self, "process_request") else None
    response = response or await self.get_response(request)
    if hasattr(self, "process_response"):
        response = self.process_response(request, response)
    return response


async def _session_inline_unless_used(self, request):
    self.process_request(request)  # a lazy SessionStore: nothing is read until the session is used
    response = await self.get_response(request)
    if request.session.accessed:  # it may be saved: database work, in a thread
        return await sync_to_async(self.process_response, thread_sensitive=True)(request, response)
    return self.process_response(request, response)


def run_django_middleware_on_the_loop() -> None:
    """Give Django's own middlewares the inline async path above (idempotent)."""
    # Replacing a method of Django's classes is the point here; mypy refuses any method assignment.
    for middleware in NON_BLOCKING_HOOKS:
        middleware.__acall__ = _hooks_inline  # type: ignore[method-assign]
    SessionMiddleware.__acall__ = _session_inline_unless_used  # type: ignore[method-assign]


def check_csrf_exempt_views_on_the_loop(handler) -> None:
    """Answer CsrfViewMiddleware's process_view for csrf_exempt views (the API's) without a thread hop.

    An ASGI handler calls a sync process_view through sync_to_async: a thread hop for every API
    request (6% of a gateway request's CPU) only to learn that its view is exempt. That answer is
    given on the loop; other views (the admin's forms) are checked on a thread as before. Only this
    handler's adapted hook changes: csrf_protect and the sync handler call process_view themselves.
    """
    for index, hook in enumerate(handler._view_middleware):
        original = getattr(hook, "func", None)
        if getattr(original, "__func__", None) is CsrfViewMiddleware.process_view:
            handler._view_middleware[index] = _exempt_on_the_loop(hook)


def _exempt_on_the_loop(in_a_thread):
    async def process_view(request, callback, callback_args, callback_kwargs):
        if getattr(callback, "csrf_exempt", False):
            return None  # what Django's process_view answers an exempt view
        return await in_a_thread(request, callback, callback_args, callback_kwargs)

    return process_view
