"""API routes of the machine side (training runs, model versions), mounted under /api/v1/."""

urlpatterns: list = []
