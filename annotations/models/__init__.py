from .annotation import Annotation, AnnotationKind
from .audit import AuditEvent
from .image import Case, CaseSplit, DicomInstance, Image, ImageStatus, SourceKind
from .project import Membership, Modality, Project, QueryStrategy, Role
from .queue import HOLDING, READ_ONCE, Assignment, AssignmentStatus

__all__ = [
    "HOLDING",
    "READ_ONCE",
    "Assignment",
    "AssignmentStatus",
    "Annotation",
    "AnnotationKind",
    "AuditEvent",
    "Case",
    "CaseSplit",
    "DicomInstance",
    "Image",
    "ImageStatus",
    "Membership",
    "Modality",
    "Project",
    "QueryStrategy",
    "Role",
    "SourceKind",
]
