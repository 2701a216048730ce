"""DICOM PS3.15 Annex E, Table E.1-1: Basic Application Level Confidentiality Profile actions.

`BASIC_PROFILE_ACTIONS` maps a tag to the action this project applies:

    X  remove the element
    Z  replace with a zero-length value (element kept, empty)
    D  replace with a non-identifying dummy value of the same VR (a sequence becomes empty)
    U  replace every UID in it (or, for a sequence, every instance UID inside it) with `DeidContext.remap_uid`

Where the standard offers a choice that depends on the attribute's Type in the IOD (X/Z/D, X/Z, Z/D), we
apply the most conservative choice valid for any Type: Z keeps Type 2 attributes present and removes all
content; X where only X/D is offered (removal is always allowed for the Type 3 attributes those are).
"C" (clean) is never attempted: cleaning free text safely needs a human, so it is treated as X.
The standard's action is quoted after each entry where ours differs from a single letter.

`MODIFIED_DATES_OPTION` lists the dates/times that the "Retain Longitudinal Temporal Information with
Modified Dates" option (column "Rtn. Long. Modif. Dates Opt.", action C) keeps in modified form instead of
the Basic action. All DA/DT values that survive are shifted by `DeidContext.date_shift_days`; TM values
are kept, because a whole-day shift leaves the time of day unchanged.

Private tags (all removed), overlay planes (60xx: data 60xx,3000 and comments 60xx,4000, we drop the whole
group) and curves (50xx) are repeating groups and are handled by rule in `deid.py`, not by this table.
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword
from pydicom.tag import BaseTag, Tag

# keyword -> applied action (standard action in the comment when it is a choice).
_ACTIONS_BY_KEYWORD: dict[str, str] = {
    # --- patient identity
    "PatientName": "Z",
    "PatientID": "Z",
    "IssuerOfPatientID": "X",
    "PatientBirthDate": "Z",
    "PatientBirthTime": "X",
    "PatientSex": "Z",
    "PatientAge": "X",
    "PatientSize": "X",
    "PatientWeight": "X",
    "PatientAddress": "X",
    "PatientTelephoneNumbers": "X",
    "OtherPatientIDs": "X",
    "OtherPatientIDsSequence": "X",
    "OtherPatientNames": "X",
    "PatientBirthName": "X",
    "PatientMotherBirthName": "X",
    "MilitaryRank": "X",
    "BranchOfService": "X",
    "EthnicGroup": "X",
    "Occupation": "X",
    "AdditionalPatientHistory": "X",
    "PatientComments": "X",
    "MedicalRecordLocator": "X",
    "MedicalAlerts": "X",
    "Allergies": "X",
    "CountryOfResidence": "X",
    "RegionOfResidence": "X",
    "PatientReligiousPreference": "X",
    "PregnancyStatus": "X",
    "LastMenstrualDate": "X",
    "PatientSexNeutered": "Z",  # X/Z
    "InsurancePlanIdentification": "X",
    "PatientInsurancePlanCodeSequence": "X",
    "PatientPrimaryLanguageCodeSequence": "X",
    "ResponsiblePerson": "X",
    "ResponsibleOrganization": "X",
    "ReferencedPatientSequence": "X",
    "ReferencedPatientAliasSequence": "X",
    "PatientState": "X",
    "PatientTransportArrangements": "X",
    "SpecialNeeds": "X",
    "PatientInstitutionResidence": "X",
    "ScheduledPatientInstitutionResidence": "X",
    "CurrentPatientLocation": "X",
    # --- visit / admission
    "AdmissionID": "X",
    "IssuerOfAdmissionID": "X",
    "AdmittingDate": "X",
    "AdmittingTime": "X",
    "AdmittingDiagnosesDescription": "X",
    "AdmittingDiagnosesCodeSequence": "X",
    "DischargeDiagnosisDescription": "X",
    "ServiceEpisodeID": "X",
    "ServiceEpisodeDescription": "X",
    "IssuerOfServiceEpisodeID": "X",
    "VisitComments": "X",
    # --- people and organisations
    "ReferringPhysicianName": "Z",
    "ReferringPhysicianAddress": "X",
    "ReferringPhysicianTelephoneNumbers": "X",
    "ReferringPhysicianIdentificationSequence": "X",
    "PerformingPhysicianName": "X",
    "PerformingPhysicianIdentificationSequence": "X",
    "NameOfPhysiciansReadingStudy": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X",
    "OperatorsName": "Z",  # X/Z/D
    "OperatorIdentificationSequence": "X",  # X/D
    "PhysiciansOfRecord": "X",
    "PhysiciansOfRecordIdentificationSequence": "X",
    "RequestingPhysician": "X",
    "RequestingService": "X",
    "ScheduledPerformingPhysicianName": "X",
    "ScheduledPerformingPhysicianIdentificationSequence": "X",
    "ContentCreatorName": "Z",
    "ContentCreatorIdentificationCodeSequence": "X",
    "VerifyingObserverName": "D",
    "VerifyingObserverSequence": "D",
    "VerifyingObserverIdentificationCodeSequence": "Z",
    "VerifyingOrganization": "X",
    "PersonName": "D",
    "PersonAddress": "X",
    "PersonTelephoneNumbers": "X",
    "PersonIdentificationCodeSequence": "D",
    "HumanPerformerName": "X",
    "HumanPerformerOrganization": "X",
    "ActualHumanPerformersSequence": "X",
    "ScheduledHumanPerformersSequence": "X",
    "AuthorObserverSequence": "X",
    "ParticipantSequence": "X",
    "CustodialOrganizationSequence": "X",
    "OrderEnteredBy": "X",
    "OrderEntererLocation": "X",
    "OrderCallbackPhoneNumber": "X",
    "NamesOfIntendedRecipientsOfResults": "X",
    "IntendedRecipientsOfResultsIdentificationSequence": "X",
    "ReviewerName": "Z",  # X/Z
    "InstitutionName": "Z",  # X/Z/D
    "InstitutionAddress": "X",
    "InstitutionCodeSequence": "Z",  # X/Z/D
    "InstitutionalDepartmentName": "X",
    # --- equipment
    "StationName": "Z",  # X/Z/D
    "DeviceSerialNumber": "Z",  # X/Z/D
    "DetectorID": "X",  # X/D
    "GantryID": "X",
    "GeneratorID": "X",
    "CassetteID": "X",
    "PlateID": "X",
    "ModifyingDeviceID": "X",
    "ModifyingDeviceManufacturer": "X",
    "PerformedStationAETitle": "X",
    "PerformedStationName": "X",
    "PerformedStationNameCodeSequence": "X",
    "PerformedStationGeographicLocationCodeSequence": "X",
    "ScheduledStationAETitle": "X",
    "ScheduledStationName": "X",
    "ScheduledStationNameCodeSequence": "X",
    "ScheduledStationGeographicLocationCodeSequence": "X",
    # --- study, request and procedure
    "AccessionNumber": "Z",
    "StudyID": "Z",
    "StudyIDIssuer": "X",
    "StudyDescription": "X",
    "SeriesDescription": "X",
    "ProtocolName": "X",  # X/D
    "RequestAttributesSequence": "X",
    "RequestedProcedureID": "X",
    "RequestedProcedureDescription": "Z",  # X/Z
    "RequestedProcedureComments": "X",
    "RequestedProcedureLocation": "X",
    "RequestedContrastAgent": "X",
    "ReasonForTheImagingServiceRequest": "X",
    "ReasonForStudy": "X",
    "ImagingServiceRequestComments": "X",
    "PlacerOrderNumberImagingServiceRequest": "Z",
    "FillerOrderNumberImagingServiceRequest": "Z",
    "PerformedProcedureStepID": "X",
    "PerformedProcedureStepDescription": "X",
    "PerformedProcedureStepStartDate": "X",
    "PerformedProcedureStepStartTime": "X",
    "PerformedLocation": "X",
    "CommentsOnThePerformedProcedureStep": "X",
    "ReferencedPerformedProcedureStepSequence": "Z",  # X/Z/D
    "ScheduledProcedureStepID": "X",
    "ScheduledProcedureStepDescription": "X",
    "ScheduledProcedureStepLocation": "X",
    "ScheduledProcedureStepStartDate": "X",
    "ScheduledProcedureStepStartTime": "X",
    "ScheduledProcedureStepEndDate": "X",
    "ScheduledProcedureStepEndTime": "X",
    "ScheduledStudyLocation": "X",
    "ScheduledStudyLocationAETitle": "X",
    "StudyComments": "X",
    "PreMedication": "X",
    "ContrastBolusAgent": "Z",  # Z/D
    "ReferencedStudySequence": "Z",  # X/Z
    "AcquisitionComments": "X",
    "AcquisitionContextSequence": "X",
    "AcquisitionDeviceProcessingDescription": "X",  # X/D
    "AcquisitionProtocolDescription": "X",
    "DerivationDescription": "X",
    "ContributionDescription": "X",
    "ConfidentialityConstraintOnPatientDataDescription": "X",
    # --- free text, comments, reports
    "ImageComments": "X",
    "FrameComments": "X",
    "ImagePresentationComments": "X",
    "IdentifyingComments": "X",
    "ModifiedImageDescription": "X",
    "TextComments": "X",
    "TextString": "X",
    "Arbitrary": "X",
    "ContentSequence": "X",
    "GraphicAnnotationSequence": "D",
    "TopicTitle": "X",
    "TopicSubject": "X",
    "TopicAuthor": "X",
    "TopicKeywords": "X",
    "InterpretationAuthor": "X",
    "InterpretationText": "X",
    "InterpretationTranscriber": "X",
    "InterpretationRecorder": "X",
    "InterpretationApproverSequence": "X",
    "InterpretationDiagnosisDescription": "X",
    "InterpretationIDIssuer": "X",
    "PhysicianApprovingInterpretation": "X",
    "Impressions": "X",
    "ResultsComments": "X",
    "ResultsIDIssuer": "X",
    "ResultsDistributionListSequence": "X",
    "DistributionName": "X",
    "DistributionAddress": "X",
    # --- dates and times (see MODIFIED_DATES_OPTION)
    "StudyDate": "Z",
    "StudyTime": "Z",
    "SeriesDate": "X",  # X/D
    "SeriesTime": "X",  # X/D
    "AcquisitionDate": "X",  # X/D
    "AcquisitionTime": "X",  # X/D
    "AcquisitionDateTime": "X",  # X/D
    "ContentDate": "Z",  # Z/D
    "ContentTime": "Z",  # Z/D
    "InstanceCreationDate": "X",  # X/D
    "InstanceCreationTime": "X",  # X/Z/D
    "OverlayDate": "X",
    "OverlayTime": "X",
    "CurveDate": "X",
    "CurveTime": "X",
    "TimezoneOffsetFromUTC": "X",
    # --- security, signatures, embedded copies
    "IconImageSequence": "X",
    "OriginalAttributesSequence": "X",
    "ModifiedAttributesSequence": "X",
    "DigitalSignaturesSequence": "X",
    "DigitalSignatureUID": "X",
    "MAC": "X",
    "ReferencedDigitalSignatureSequence": "X",
    "ReferencedSOPInstanceMACSequence": "X",
    "DataSetTrailingPadding": "X",
    # --- UIDs
    "StudyInstanceUID": "U",
    "SeriesInstanceUID": "U",
    "SOPInstanceUID": "U",
    "MediaStorageSOPInstanceUID": "U",
    "FrameOfReferenceUID": "U",
    "SynchronizationFrameOfReferenceUID": "U",
    "ReferencedSOPInstanceUID": "U",
    "ReferencedSOPInstanceUIDInFile": "U",
    "ReferencedFrameOfReferenceUID": "U",
    "RelatedFrameOfReferenceUID": "U",
    "InstanceCreatorUID": "U",
    "ConcatenationUID": "U",
    "DimensionOrganizationUID": "U",
    "IrradiationEventUID": "U",
    "DeviceUID": "U",
    "DoseReferenceUID": "U",
    "FiducialUID": "U",
    "LargePaletteColorLookupTableUID": "U",
    "StorageMediaFileSetUID": "U",
    "TransactionUID": "U",
    "CreatorVersionUID": "U",
    "ContextGroupExtensionCreatorUID": "U",
    "TemplateExtensionOrganizationUID": "U",
    "TemplateExtensionCreatorUID": "U",
    "FailedSOPInstanceUIDList": "U",
    "UID": "U",
    "ReferencedImageSequence": "U",  # X/Z/U*
    "SourceImageSequence": "U",  # X/Z/U*
}

_MODIFIED_DATES_KEYWORDS: tuple[str, ...] = (
    "StudyDate",
    "StudyTime",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "AcquisitionDateTime",
    "ContentDate",
    "ContentTime",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "OverlayDate",
    "OverlayTime",
    "CurveDate",
    "CurveTime",
    "AdmittingDate",
    "AdmittingTime",
    "LastMenstrualDate",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepEndDate",
    "ScheduledProcedureStepEndTime",
)


def _tag(keyword: str) -> BaseTag:
    value = tag_for_keyword(keyword)
    if value is None:  # a typo here would silently leave an attribute in place
        raise KeyError(f"not a DICOM keyword: {keyword}")
    return Tag(value)


BASIC_PROFILE_ACTIONS: dict[BaseTag, str] = {_tag(k): a for k, a in _ACTIONS_BY_KEYWORD.items()}
MODIFIED_DATES_OPTION: frozenset[BaseTag] = frozenset(_tag(k) for k in _MODIFIED_DATES_KEYWORDS)

# UIDs that name a class or an encoding, not an instance: never remapped.
KEEP_UID_TAGS: frozenset[BaseTag] = frozenset(
    _tag(k)
    for k in (
        "SOPClassUID",
        "MediaStorageSOPClassUID",
        "ReferencedSOPClassUID",
        "ReferencedSOPClassUIDInFile",
        "TransferSyntaxUID",
        "ReferencedTransferSyntaxUIDInFile",
        "ImplementationClassUID",
        "CodingSchemeUID",
        "ContextUID",
        "MappingResourceUID",
        "PrivateInformationCreatorUID",
    )
)
