import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hitl.settings.local")
application = get_wsgi_application()
# Load every view module (torch included) now, not in the first request a worker serves.
get_resolver().url_patterns  # noqa: B018
