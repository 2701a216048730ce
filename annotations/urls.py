"""Routes of the clinical side: its JSON API (under api/v1/) and its pages; mounted at the site root."""

from django.urls import include, path

from annotations import pages
from annotations.apis import (
    agreement,
    audit,
    auth,
    cases,
    editor,
    members,
    projects,
    queue,
    revisions,
    triage,
)

api: list = [
    path("auth/token", auth.TokenApi.as_view(), name="api-token"),
    path("auth/token/revoke", auth.TokenRevokeApi.as_view(), name="api-token-revoke"),
    path("auth/token/revoke-all", auth.TokenRevokeAllApi.as_view(), name="api-token-revoke-all"),
    path("projects", projects.ProjectListApi.as_view(), name="project-list"),
    path("projects/<int:project_id>", projects.ProjectDetailApi.as_view(), name="project-detail"),
    path("projects/<int:project_id>/members", members.MemberListApi.as_view(), name="member-list"),
    path(
        "projects/<int:project_id>/members/<int:membership_id>",
        members.MemberDetailApi.as_view(),
        name="member-detail",
    ),
    path("projects/<int:project_id>/cases", cases.CaseListApi.as_view(), name="case-list"),
    path("projects/<int:project_id>/audit", audit.AuditListApi.as_view(), name="audit-list"),
    path("projects/<int:project_id>/queue", queue.QueueHeadApi.as_view(), name="queue-head"),
    path("projects/<int:project_id>/queue/claim", queue.ClaimApi.as_view(), name="queue-claim"),
    path("projects/<int:project_id>/my-cases", revisions.MyCasesApi.as_view(), name="my-cases"),
    path(
        "projects/<int:project_id>/flagged-skipped",
        triage.FlaggedSkippedApi.as_view(),
        name="flagged-skipped",
    ),
    path(
        "cases/<int:case_id>/return-to-queue", triage.ReturnToQueueApi.as_view(), name="case-return-to-queue"
    ),
    path("cases/<int:case_id>", cases.CaseDetailApi.as_view(), name="case-detail"),
    path("cases/<int:case_id>/lease/heartbeat", queue.HeartbeatApi.as_view(), name="lease-heartbeat"),
    path("cases/<int:case_id>/lease/release", queue.ReleaseApi.as_view(), name="lease-release"),
    path("cases/<int:case_id>/lease/take-over", queue.TakeOverApi.as_view(), name="lease-take-over"),
    path("cases/<int:case_id>/lease/reclaim", queue.ReclaimApi.as_view(), name="lease-reclaim"),
    path("cases/<int:case_id>/skip", queue.SkipApi.as_view(), name="case-skip"),
    path("cases/<int:case_id>/flag", queue.FlagApi.as_view(), name="case-flag"),
    path("cases/<int:case_id>/annotations", queue.SubmitApi.as_view(), name="annotation-submit"),
    path("cases/<int:case_id>/revisions", revisions.ReviseApi.as_view(), name="annotation-revise"),
    path("cases/<int:case_id>/editor", editor.EditorPayloadApi.as_view(), name="case-editor"),
    path("cases/<int:case_id>/pixels", editor.PixelsApi.as_view(), name="case-pixels"),
    path("cases/<int:case_id>/volume", editor.VolumeApi.as_view(), name="case-volume"),
    path(
        "cases/<int:case_id>/volume/interpolated.png",
        editor.InterpolatedLabelApi.as_view(),
        name="case-volume-interpolated",
    ),
    path(
        "cases/<int:case_id>/volume/<str:view>/<int:index>",
        editor.VolumePlaneApi.as_view(),
        name="case-volume-plane",
    ),
    path(
        "cases/<int:case_id>/volume/<str:view>/<int:index>/label.png",
        editor.VolumeLabelApi.as_view(),
        name="case-volume-label",
    ),
    path(
        "annotations/<int:annotation_id>/mask.png", editor.AnnotationMaskApi.as_view(), name="annotation-mask"
    ),
    path("cases/<int:case_id>/thumbnail.png", cases.CaseThumbnailApi.as_view(), name="case-thumbnail"),
    path(
        "projects/<int:project_id>/agreement",
        agreement.ProjectAgreementApi.as_view(),
        name="project-agreement",
    ),
    path(
        "projects/<int:project_id>/agreement.csv",
        agreement.AgreementCsvApi.as_view(),
        name="project-agreement-csv",
    ),
    path("cases/<int:case_id>/agreement", agreement.CaseAgreementApi.as_view(), name="case-agreement"),
    path("cases/<int:case_id>/adjudicate", agreement.AdjudicateApi.as_view(), name="case-adjudicate"),
]

pages_: list = [
    path("", pages.home, name="home"),
    path("projects/<int:project_id>/", pages.project_page, name="project-page"),
    path("projects/<int:project_id>/annotate/", pages.editor_page, name="editor-page"),
    path("projects/<int:project_id>/agreement/", pages.agreement_page, name="agreement-page"),
    path(
        "projects/<int:project_id>/agreement/cases/<int:case_id>/",
        pages.agreement_case_page,
        name="agreement-case-page",
    ),
]

urlpatterns: list = [path("api/v1/", include(api)), *pages_]
