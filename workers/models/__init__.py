from .explain_report import OPEN_REPORT, ExplanationReport, ReportStatus
from .export import ExportFormat, ExportJob, ExportLabels, ExportStatus
from .heartbeat import WorkerHeartbeat
from .modeling import (
    OPEN_RUN,
    CaseScore,
    Explanation,
    ModelVersion,
    Prediction,
    RunStatus,
    TrainingRun,
    VersionState,
)
from .probe import TaskProbe
from .settings import QueryStrategy, TrainingSettings

__all__ = [
    "OPEN_REPORT",
    "OPEN_RUN",
    "CaseScore",
    "Explanation",
    "ExplanationReport",
    "ExportFormat",
    "ExportJob",
    "ExportLabels",
    "ExportStatus",
    "ModelVersion",
    "Prediction",
    "QueryStrategy",
    "ReportStatus",
    "RunStatus",
    "TaskProbe",
    "TrainingRun",
    "TrainingSettings",
    "VersionState",
    "WorkerHeartbeat",
]
