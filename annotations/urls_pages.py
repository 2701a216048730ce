"""Browser pages of the workspace (editor, ML engineer, data manager), mounted at the site root."""

urlpatterns: list = []
