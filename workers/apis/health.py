"""GET /healthz: database, broker and worker reachability, for operators and load balancers.

Anyone gets the verdict (200 "ok" / 503 "degraded"); only site staff get the details (backends, queue
names, worker count), which would tell an anonymous caller how the deployment is built."""

from django.db import connection
from django.http import JsonResponse

from hitl.celery import app
from workers.selectors.health import workers_alive


def _check_db() -> tuple[bool, str]:
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
        return True, connection.vendor
    except Exception as exc:
        return False, type(exc).__name__


def _check_broker() -> tuple[bool, str]:
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            return True, conn.transport_cls if isinstance(
                conn.transport_cls, str
            ) else conn.transport.driver_type
    except Exception as exc:
        return False, type(exc).__name__


def healthz(request):
    db_ok, db_info = _check_db()
    broker_ok, broker_info = _check_broker()
    alive = workers_alive() if db_ok else []
    worker_ok = bool(alive)
    verdict = "ok" if db_ok and broker_ok and worker_ok else "degraded"
    if not getattr(request.user, "is_staff", False):
        return JsonResponse({"status": verdict}, status=200 if verdict == "ok" else 503)
    body = {
        "status": verdict,
        "database": {"ok": db_ok, "backend": db_info},
        "broker": {"ok": broker_ok, "transport": broker_info},
        "worker": {
            "ok": worker_ok,
            "count": len(alive),
            "queues": sorted({q for w in alive for q in w.queues}),
        },
    }
    return JsonResponse(body, status=200 if verdict == "ok" else 503)
