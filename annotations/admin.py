from django.contrib import admin

from annotations.models import Annotation, AuditEvent, Case, DicomInstance, Image, Membership, Project


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "modality", "readers_per_case", "query_strategy", "created_at"]
    search_fields = ["name"]
    exclude = ["deid_salt", "date_shift_days"]
    inlines = [MembershipInline]


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


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["at", "actor", "project", "action", "target_type", "target_id"]
    list_filter = ["action", "project"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


admin.site.register(DicomInstance)
admin.site.register(Membership)
