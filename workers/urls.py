"""Routes of the machine side: its JSON API under api/v1/ (imports, model layers of a case, training
settings, training runs, model versions, explanation reports, exports), its pages and the health check;
mounted at the site root."""

from django.urls import include, path

from workers import pages
from workers.apis import explain_report, exports, health, imports, layers, settings, training, volume

api: list = [
    path("projects/<int:project_id>/images", imports.ImageListApi.as_view(), name="image-list"),
    path("projects/<int:project_id>/imports", imports.ImportJobListApi.as_view(), name="import-list"),
    path("imports/<int:import_id>", imports.ImportJobDetailApi.as_view(), name="import-detail"),
    path("cases/<int:case_id>/proposal.png", layers.ProposalPngApi.as_view(), name="case-proposal"),
    path(
        "cases/<int:case_id>/volume/agreement",
        volume.VolumeAgreementApi.as_view(),
        name="case-volume-agreement",
    ),
    path(
        "cases/<int:case_id>/explanations",
        layers.ExplanationRequestApi.as_view(),
        name="case-explanation-request",
    ),
    path("cases/<int:case_id>/uncertainty.png", layers.UncertaintyPngApi.as_view(), name="case-uncertainty"),
    path(
        "explanations/<int:explanation_id>/map.png",
        layers.ExplanationMapApi.as_view(),
        name="explanation-map",
    ),
    path(
        "projects/<int:project_id>/training-settings",
        settings.TrainingSettingsApi.as_view(),
        name="training-settings",
    ),
    path(
        "projects/<int:project_id>/training-runs",
        training.TrainingRunListApi.as_view(),
        name="training-run-list",
    ),
    path("training-runs/<int:run_id>", training.TrainingRunDetailApi.as_view(), name="training-run-detail"),
    path(
        "training-runs/<int:run_id>/cancel",
        training.TrainingRunCancelApi.as_view(),
        name="training-run-cancel",
    ),
    path(
        "projects/<int:project_id>/model-versions",
        training.ModelVersionListApi.as_view(),
        name="model-version-list",
    ),
    path(
        "projects/<int:project_id>/model-versions/rollback",
        training.ModelVersionRollbackApi.as_view(),
        name="model-version-rollback",
    ),
    path(
        "model-versions/<int:version_id>/promote",
        training.ModelVersionPromoteApi.as_view(),
        name="model-version-promote",
    ),
    path(
        "projects/<int:project_id>/model-bundles",
        training.ModelBundleImportApi.as_view(),
        name="model-bundle-import",
    ),
    path(
        "model-versions/<int:version_id>/bundle",
        training.ModelVersionBundleApi.as_view(),
        name="model-version-bundle",
    ),
    path(
        "projects/<int:project_id>/learning-curve",
        training.LearningCurveApi.as_view(),
        name="learning-curve",
    ),
    path(
        "projects/<int:project_id>/explanation-reports",
        explain_report.ExplanationReportListApi.as_view(),
        name="explanation-report-list",
    ),
    path(
        "explanation-reports/<int:report_id>",
        explain_report.ExplanationReportDetailApi.as_view(),
        name="explanation-report-detail",
    ),
    path(
        "explanation-reports/<int:report_id>/cancel",
        explain_report.ExplanationReportCancelApi.as_view(),
        name="explanation-report-cancel",
    ),
    path(
        "explanation-reports/<int:report_id>/plot.png",
        explain_report.ExplanationReportPlotApi.as_view(),
        name="explanation-report-plot",
    ),
    path("projects/<int:project_id>/exports", exports.ExportListApi.as_view(), name="export-list"),
    path("exports/<int:job_id>", exports.ExportDetailApi.as_view(), name="export-detail"),
    path("exports/<int:job_id>/download", exports.ExportDownloadApi.as_view(), name="export-download"),
]

urlpatterns: list = [
    path("api/v1/", include(api)),
    path("projects/<int:project_id>/ml/", pages.ml_page, name="ml-page"),
    path("projects/<int:project_id>/data/", pages.data_page, name="data-page"),
    path("healthz", health.healthz, name="healthz"),
]
