from .agreement import Agreement, ReaderAgreement
from .annotation import Annotation, AnnotationKind
from .image import Case, CaseSplit, DicomInstance, Image, ImageStatus, SourceKind
from .imports import FINISHED_IMPORT, ImportJob, ImportStatus
from .project import LabelPolicy, Membership, Modality, Project, Role, UnitScore
from .queue import HOLDING, READ_ONCE, Assignment, AssignmentStatus

__all__ = [
    "FINISHED_IMPORT",
    "HOLDING",
    "READ_ONCE",
    "Assignment",
    "AssignmentStatus",
    "Agreement",
    "Annotation",
    "AnnotationKind",
    "Case",
    "CaseSplit",
    "DicomInstance",
    "Image",
    "ImageStatus",
    "ImportJob",
    "ImportStatus",
    "LabelPolicy",
    "Membership",
    "Modality",
    "Project",
    "ReaderAgreement",
    "Role",
    "SourceKind",
    "UnitScore",
]
