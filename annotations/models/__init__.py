from .annotation import Annotation, AnnotationKind
from .audit import AuditEvent
from .image import Case, CaseSplit, DicomInstance, Image, ImageStatus, SourceKind
from .project import Membership, Modality, Project, QueryStrategy, Role

__all__ = [
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
