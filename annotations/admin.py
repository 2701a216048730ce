from django.contrib import admin
from django.db import transaction

from annotations.models import Annotation, Case, DicomInstance, Image, Membership, Project
from hitl.core.audit import audit_record


def _membership_details(membership: Membership, **extra) -> dict:
    return {"user_id": membership.user_id, "role": membership.role, "via": "admin", **extra}


def _membership_ids(membership: Membership) -> dict:
    return {"user_id": membership.user_id, "role": membership.role, "project_id": membership.project_id}


def _audit_membership_saved(request, membership: Membership, before: Membership | None) -> None:
    """Audit an admin add/change of a membership, as the members API's services do (ids and role only)."""
    if before is None:
        audit_record(
            actor=request.user,
            action="membership.add",
            project=membership.project,
            target=membership,
            details=_membership_details(membership),
        )
        return
    previous = _membership_ids(before)
    if previous == _membership_ids(membership):
        return  # saved unchanged: nothing to record
    audit_record(
        actor=request.user,
        action="membership.update",
        project=membership.project,
        target=membership,
        details=_membership_details(membership, previous=previous),
    )
    if before.project_id != membership.project_id:  # the old project's trail shows the member leaving
        audit_record(
            actor=request.user,
            action="membership.remove",
            project=before.project,
            details=_membership_details(before, membership_id=before.pk),
        )


def _audit_membership_removed(request, membership: Membership) -> None:
    audit_record(
        actor=request.user,
        action="membership.remove",
        project=membership.project,
        details=_membership_details(membership, membership_id=membership.pk),
    )


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "modality", "readers_per_case", "created_at"]
    search_fields = ["name"]
    exclude = ["deid_salt", "date_shift_days"]
    inlines = [MembershipInline]

    def save_formset(self, request, form, formset, change):
        """Memberships edited inline are audited like those edited on their own page (the admin's
        change view runs in one transaction, so the rows and their audit commit together)."""
        if formset.model is not Membership:
            return super().save_formset(request, form, formset, change)
        # The forms' instances already hold the new values: the old ones come from the database.
        edited = [f.instance.pk for f in formset.initial_forms if f.instance.pk and f.has_changed()]
        before = {m.pk: m for m in Membership.objects.select_related("project").filter(pk__in=edited)}
        instances = formset.save(commit=False)
        for membership in formset.deleted_objects:
            _audit_membership_removed(request, membership)
            membership.delete()
        for membership in instances:
            membership.save()
            _audit_membership_saved(request, membership, before.get(membership.pk))
        formset.save_m2m()
        return None


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    """Every add, change and delete here leaves the same audit events as the members API."""

    list_display = ["id", "project", "user", "role", "created_at"]
    list_filter = ["role", "project"]

    def save_model(self, request, obj, form, change):
        before = Membership.objects.select_related("project").filter(pk=obj.pk).first() if change else None
        super().save_model(request, obj, form, change)
        _audit_membership_saved(request, obj, before)

    def delete_model(self, request, obj):
        _audit_membership_removed(request, obj)
        super().delete_model(request, obj)

    @transaction.atomic  # the changelist's bulk delete action, unlike the delete page, has no transaction
    def delete_queryset(self, request, queryset):
        for membership in queryset.select_related("project"):
            _audit_membership_removed(request, membership)
        super().delete_queryset(request, queryset)


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "display_name", "source_kind", "modality", "status", "created_at"]
    list_filter = ["project", "source_kind", "status"]
    readonly_fields = [f.name for f in Image._meta.fields]


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "image", "slice_index", "split", "current_annotation"]
    list_filter = ["project", "split"]
    raw_id_fields = ["image", "current_annotation"]


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    """Revisions are immutable: read-only here too."""

    list_display = ["id", "case", "revision", "kind", "author", "time_spent_s", "created_at"]
    list_filter = ["kind"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


admin.site.register(DicomInstance)
