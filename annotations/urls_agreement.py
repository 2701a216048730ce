"""Inter-observer agreement APIs, mounted under /api/v1/."""

urlpatterns: list = []
