"""Browser pages of the workspace (editor, ML engineer, data manager), mounted at the site root."""

from django.urls import path

from annotations import views_workspace

urlpatterns: list = [
    path("projects/<int:project_id>/annotate/", views_workspace.editor_page, name="editor-page"),
    path("projects/<int:project_id>/ml/", views_workspace.ml_page, name="ml-page"),
    path("projects/<int:project_id>/data/", views_workspace.data_page, name="data-page"),
]
