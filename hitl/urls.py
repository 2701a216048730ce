from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from annotations import views
from annotations.apis import audit, auth, cases, editor, images, members, projects, queue
from workers.apis.health import healthz

api_v1 = [
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
    path("projects/<int:project_id>/images", images.ImageListApi.as_view(), name="image-list"),
    path("projects/<int:project_id>/imports", images.ImportJobListApi.as_view(), name="import-list"),
    path("imports/<int:import_id>", images.ImportJobDetailApi.as_view(), name="import-detail"),
    path("projects/<int:project_id>/cases", cases.CaseListApi.as_view(), name="case-list"),
    path("projects/<int:project_id>/audit", audit.AuditListApi.as_view(), name="audit-list"),
    path("projects/<int:project_id>/queue", queue.QueueHeadApi.as_view(), name="queue-head"),
    path("projects/<int:project_id>/queue/claim", queue.ClaimApi.as_view(), name="queue-claim"),
    path("cases/<int:case_id>", cases.CaseDetailApi.as_view(), name="case-detail"),
    path("cases/<int:case_id>/lease/heartbeat", queue.HeartbeatApi.as_view(), name="lease-heartbeat"),
    path("cases/<int:case_id>/lease/release", queue.ReleaseApi.as_view(), name="lease-release"),
    path("cases/<int:case_id>/skip", queue.SkipApi.as_view(), name="case-skip"),
    path("cases/<int:case_id>/flag", queue.FlagApi.as_view(), name="case-flag"),
    path("cases/<int:case_id>/annotations", queue.SubmitApi.as_view(), name="annotation-submit"),
    path("cases/<int:case_id>/editor", editor.EditorPayloadApi.as_view(), name="case-editor"),
    path("cases/<int:case_id>/pixels", editor.PixelsApi.as_view(), name="case-pixels"),
    path("cases/<int:case_id>/proposal.png", editor.ProposalPngApi.as_view(), name="case-proposal"),
    path(
        "cases/<int:case_id>/explanations",
        editor.ExplanationRequestApi.as_view(),
        name="case-explanation-request",
    ),
    path("cases/<int:case_id>/uncertainty.png", editor.UncertaintyPngApi.as_view(), name="case-uncertainty"),
    path(
        "annotations/<int:annotation_id>/mask.png", editor.AnnotationMaskApi.as_view(), name="annotation-mask"
    ),
    path(
        "explanations/<int:explanation_id>/map.png",
        editor.ExplanationMapApi.as_view(),
        name="explanation-map",
    ),
    path("cases/<int:case_id>/thumbnail.png", cases.CaseThumbnailApi.as_view(), name="case-thumbnail"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("projects/<int:project_id>/", views.project_page, name="project-page"),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("api/v1/", include(api_v1)),
    path("api/v1/", include("workers.urls")),
    path("", include("annotations.urls_agreement")),
    path("", include("annotations.urls_pages")),
]

handler404 = "annotations.views.not_found"
handler500 = "annotations.views.server_error"
