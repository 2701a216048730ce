from django.db import transaction
from rest_framework.authtoken.models import Token

from annotations.services.audit import audit_record


@transaction.atomic
def token_issue(*, user) -> str:
    token, created = Token.objects.get_or_create(user=user)
    if created:
        audit_record(actor=user, action="token.issue")
    return token.key
