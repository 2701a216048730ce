"""The attributes outside Table E.1-1 that de-identification keeps: everything else is removed.

The Basic profile table (`profile.py`) lists what is known to identify; it cannot list what a vendor or a
later edition adds, so `deid.py` keeps an attribute only when it is in the table (and survives its action)
or named here. The allowlist holds what this project needs to decode, place and display an image and to
write it back as valid DICOM (the DICOM SEG export references these files), and acquisition parameters that
say how the image was made but nothing about who or where: pixel module, geometry, the identifiers of the
instance (its UIDs are table rows, remapped there), equipment make and model, CT/MR acquisition parameters,
burned-in / lossy-compression flags and the de-identification markers `deid.py` writes.

Free-text attributes are not allowed in, with one exception: WindowCenterWidthExplanation, which names
window presets ("BONE", "LUNG") and is shown to readers. The same rules apply inside sequences, at every
depth: an allowlisted sequence (e.g. a functional group) keeps only allowlisted or table attributes in its
items.
"""

from __future__ import annotations

from pydicom.tag import BaseTag

from workers.ml.imaging.profile import E11_TABLE, keyword_tag

_PIXEL = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "PixelAspectRatio",
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "NumberOfFrames",
    "FrameIncrementPointer",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
    "AlphaPaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "AlphaPaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData",
    "SegmentedAlphaPaletteColorLookupTableData",
)
_PRESENTATION = (
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "WindowCenterWidthExplanation",
    "VOILUTFunction",
    "VOILUTSequence",
    "ModalityLUTSequence",
    "LUTDescriptor",
    "LUTData",
    "ModalityLUTType",
    "PresentationLUTShape",
    "PixelIntensityRelationship",
    "PixelIntensityRelationshipSign",
    "PixelValueTransformationSequence",
    "FrameVOILUTSequence",
)
_GEOMETRY = (
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "SliceLocation",
    "PatientPosition",
    "PatientOrientation",
    "ViewPosition",
    "Laterality",
    "ImageLaterality",
    # enhanced multi-frame: functional groups and the items that place each frame
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
    "PlanePositionSequence",
    "PlaneOrientationSequence",
    "PixelMeasuresSequence",
    "FrameContentSequence",
    "DimensionIndexValues",
    "InStackPositionNumber",
    "TemporalPositionIndex",
    "DimensionOrganizationSequence",
    "DimensionOrganizationType",
    "DimensionIndexSequence",
    "DimensionIndexPointer",
    "FunctionalGroupPointer",
)
_IDENTIFIERS = (
    "SOPClassUID",
    "Modality",
    "SpecificCharacterSet",
    "ImageType",
    "PresentationIntentType",
    "SeriesNumber",
    "InstanceNumber",
    "AcquisitionNumber",
    # items of the reference sequences the table keeps (X/Z/U*): class, frame and segment, no free text
    "ReferencedSOPClassUID",
    "ReferencedFrameNumber",
    "ReferencedSegmentNumber",
)
_EQUIPMENT = ("Manufacturer", "ManufacturerModelName")
_CT = (
    "KVP",
    "XRayTubeCurrent",
    "XRayTubeCurrentInmA",
    "ExposureTime",
    "Exposure",
    "ExposureInmAs",
    "ConvolutionKernel",
    "FilterType",
    "FocalSpots",
    "GeneratorPower",
    "DataCollectionDiameter",
    "ReconstructionDiameter",
    "GantryDetectorTilt",
    "TableHeight",
    "RotationDirection",
    "DistanceSourceToDetector",
    "DistanceSourceToPatient",
    "RevolutionTime",
    "SingleCollimationWidth",
    "TotalCollimationWidth",
    "TableSpeed",
    "TableFeedPerRotation",
    "SpiralPitchFactor",
    "CTDIvol",
)
_MR = (
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "FlipAngle",
    "MagneticFieldStrength",
    "ScanningSequence",
    "SequenceVariant",
    "ScanOptions",
    "MRAcquisitionType",
    "EchoTrainLength",
    "EchoNumbers",
    "ImagingFrequency",
    "ImagedNucleus",
    "NumberOfAverages",
    "PixelBandwidth",
    "NumberOfPhaseEncodingSteps",
    "PercentSampling",
    "PercentPhaseFieldOfView",
    "AcquisitionMatrix",
    "InPlanePhaseEncodingDirection",
    "VariableFlipAngleFlag",
    "SAR",
    "dBdt",
    "DiffusionBValue",
)
_FLAGS = (
    "BodyPartExamined",
    "BurnedInAnnotation",
    "RecognizableVisualFeatures",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    # written by deid.py after cleaning
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "LongitudinalTemporalInformationModified",
)

ALLOWLIST_KEYWORDS: tuple[str, ...] = (
    _PIXEL + _PRESENTATION + _GEOMETRY + _IDENTIFIERS + _EQUIPMENT + _CT + _MR + _FLAGS
)


def _build() -> frozenset[BaseTag]:
    """Tags of the allowlist; refuses a keyword that is also a table row (the table decides those)."""
    tags = frozenset(keyword_tag(k) for k in ALLOWLIST_KEYWORDS)
    overlap = tags & E11_TABLE.keys()
    if overlap or len(tags) != len(ALLOWLIST_KEYWORDS):
        raise ValueError(f"allowlist repeats a keyword or a Table E.1-1 row: {sorted(overlap)}")
    return tags


ALLOWLIST: frozenset[BaseTag] = _build()
