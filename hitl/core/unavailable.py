"""The database or the broker behind a request is down (a restart, a failover): the client gets 503 with
Retry-After, never a 500, so it knows to retry and that nothing is wrong with its request."""

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
UNAVAILABLE = (OperationalError, InterfaceError)


class ServiceUnavailableMiddleware:
    """Turns a lost database connection raised by a view into 503 (JSON error body under /api/)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, UNAVAILABLE):
            return None
        log.warning(
            "database unavailable during %s %s: %s", request.method, request.path, type(exception).__name__
        )
        message = "the service's database is not reachable right now; retry in a few seconds"
        if request.path.startswith("/api/"):
            response: HttpResponse = JsonResponse(
                {"error": {"code": "unavailable", "message": message, "details": {}}}, status=503
            )
        else:
            response = HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(RETRY_AFTER_S)
        return response
