"""Inter-observer agreement: APIs (paths start with api/v1/) and the dashboard page; mounted at the root."""

from django.urls import path

from annotations import views_agreement
from annotations.apis import agreement

urlpatterns: list = [
    path(
        "api/v1/projects/<int:project_id>/agreement",
        agreement.ProjectAgreementApi.as_view(),
        name="project-agreement",
    ),
    path(
        "api/v1/projects/<int:project_id>/agreement.csv",
        agreement.AgreementCsvApi.as_view(),
        name="project-agreement-csv",
    ),
    path("api/v1/cases/<int:case_id>/agreement", agreement.CaseAgreementApi.as_view(), name="case-agreement"),
    path("projects/<int:project_id>/agreement/", views_agreement.agreement_page, name="agreement-page"),
    path(
        "projects/<int:project_id>/agreement/cases/<int:case_id>/",
        views_agreement.agreement_case_page,
        name="agreement-case-page",
    ),
]
