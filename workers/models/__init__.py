from .heartbeat import WorkerHeartbeat
from .probe import TaskProbe

__all__ = ["TaskProbe", "WorkerHeartbeat"]
