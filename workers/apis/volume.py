"""Agreement in 3D on the volume a case belongs to (issue 19; workers.services.agreement_volume)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.selectors.editor import case_get_for_viewer
from hitl.core.permissions import reads_blind
from workers.services.agreement_volume import volume_agreement


class VolumeAgreementApi(APIView):
    """The readers' agreement over the longest run of slices of this case's volume that they all labelled:
    pairwise Dice, IoU, HD95, ASSD and surface Dice in mm on the volume's spacing, kappa, STAPLE on the
    volume (sensitivity/specificity per reader) and each reader against it; readers are pseudonyms. Every
    role but a blind reader (403); 404 until two readers share a labelled slice."""

    @extend_schema(responses=OpenApiTypes.OBJECT, operation_id="cases_volume_agreement")
    def get(self, request, case_id: int):
        case, roles = case_get_for_viewer(user=request.user, case_id=case_id)
        if reads_blind(roles):
            raise PermissionDenied("readers read blind: the agreement shows other readers' labels")
        result = volume_agreement(image=case.image)
        if result is None:
            raise NotFound("no two readers have labelled the same slices of this volume yet")
        return Response(result)
