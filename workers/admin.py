from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from workers.models import (
    CaseScore,
    Explanation,
    ExplanationReport,
    ExportJob,
    ModelVersion,
    Prediction,
    TrainingRun,
    TrainingSettings,
    WorkerHeartbeat,
)
from workers.services.training_config import training_config_validate


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ["hostname", "queues", "pid", "started_at", "last_seen"]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "number", "state", "created_at", "promoted_at"]
    list_filter = ["state"]
    readonly_fields = ["weights_path", "weights_sha256", "config", "metrics"]


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "status", "trigger", "progress", "created_at", "finished_at"]
    list_filter = ["status", "trigger"]
    readonly_fields = ["config", "epochs", "revision_ids", "heartbeat_at"]


@admin.register(CaseScore)
class CaseScoreAdmin(admin.ModelAdmin):
    list_display = ["case", "model_version", "strategy", "score", "rank"]


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ["case", "model_version", "created_at"]


@admin.register(Explanation)
class ExplanationAdmin(admin.ModelAdmin):
    list_display = ["case", "model_version", "method", "seconds", "created_at"]


@admin.register(ExplanationReport)
class ExplanationReportAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "model_version", "status", "progress", "created_at", "finished_at"]
    list_filter = ["status"]
    readonly_fields = ["methods", "case_ids", "result", "plot_path", "error"]


@admin.register(ExportJob)
class ExportJobAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "status", "progress", "size_bytes", "created_at", "expires_at"]
    list_filter = ["status"]
    readonly_fields = ["params", "result_path", "sha256", "size_bytes", "counts", "error"]


class TrainingSettingsForm(forms.ModelForm):
    class Meta:
        model = TrainingSettings
        fields = ["project", "query_strategy", "auto_retrain_every", "gating_tolerance", "training_config"]

    def clean_training_config(self):
        """The same key-by-key rules as the training-settings API (the admin bypasses its service)."""
        try:
            return training_config_validate(self.cleaned_data["training_config"] or {})
        except ValidationError as exc:  # keyed "config" by the service: this form's field is training_config
            raise ValidationError([m for ms in exc.message_dict.values() for m in ms]) from exc


@admin.register(TrainingSettings)
class TrainingSettingsAdmin(admin.ModelAdmin):
    form = TrainingSettingsForm
    list_display = ["project", "query_strategy", "auto_retrain_every", "gating_tolerance"]
    list_filter = ["query_strategy"]
    raw_id_fields = ["project"]
