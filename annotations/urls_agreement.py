"""Inter-observer agreement: APIs (paths start with api/v1/) and the dashboard page; mounted at the root."""

urlpatterns: list = []
