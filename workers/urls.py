"""API routes of the machine side (training runs, model versions, explanation reports, exports), mounted under /api/v1/."""

from django.urls import path

from workers.apis import explain_report, exports, training

urlpatterns: list = [
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
        "explanation-reports/<int:report_id>/plot.png",
        explain_report.ExplanationReportPlotApi.as_view(),
        name="explanation-report-plot",
    ),
    path("projects/<int:project_id>/exports", exports.ExportListApi.as_view(), name="export-list"),
    path("exports/<int:job_id>", exports.ExportDetailApi.as_view(), name="export-detail"),
    path("exports/<int:job_id>/download", exports.ExportDownloadApi.as_view(), name="export-download"),
]
