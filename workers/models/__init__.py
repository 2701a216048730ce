from .export import ExportFormat, ExportJob, ExportLabels, ExportStatus
from .heartbeat import WorkerHeartbeat
from .modeling import (
    OPEN_RUN,
    CaseScore,
    Explanation,
    ModelVersion,
    OutboxMessage,
    Prediction,
    RunStatus,
    TrainingRun,
    VersionState,
)
from .probe import TaskProbe

__all__ = [
    "OPEN_RUN",
    "CaseScore",
    "Explanation",
    "ExportFormat",
    "ExportJob",
    "ExportLabels",
    "ExportStatus",
    "ModelVersion",
    "OutboxMessage",
    "Prediction",
    "RunStatus",
    "TaskProbe",
    "TrainingRun",
    "VersionState",
    "WorkerHeartbeat",
]
