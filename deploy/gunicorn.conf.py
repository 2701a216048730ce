"""gunicorn settings; every value can be overridden from the environment (see deploy/.env.example)."""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))  # large uploads are parsed in the request
graceful_timeout = 20
accesslog = "-"
errorlog = "-"
# Access logs carry paths and ids only (no query strings with data, no bodies): no PHI.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss'
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
