from django.contrib import admin

from hitl.core.models import AuditEvent, OutboxMessage


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


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    """What the outbox still has to send (sent_at empty) and why it failed, for the operator."""

    list_display = ["id", "task", "created_at", "sent_at", "attempts", "last_error"]
    list_filter = ["task"]
    readonly_fields = ["task", "kwargs", "created_at", "sent_at", "attempts", "last_error"]
