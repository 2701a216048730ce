"""API tokens (django-rest-knox): the database keeps a SHA-512 digest and the first 15 characters of each key,
never the key itself; every token expires after HITL_TOKEN_TTL_HOURS."""

from datetime import datetime

from django.db import transaction
from django.utils import timezone
from knox.models import AuthToken

from hitl.core.audit import audit_record
from hitl.core.types import User


@transaction.atomic
def token_issue(*, user: User) -> tuple[str, datetime | None]:
    """Create a new token for `user` (one per login: scripts on two machines do not share one) and return
    the key, shown this once, and its expiry. The user's expired tokens are deleted here (API calls only
    check the token they present)."""
    AuthToken.objects.filter(user=user, expiry__lt=timezone.now()).delete()
    instance, key = AuthToken.objects.create(user=user)
    audit_record(
        actor=user,
        action="token.issue",
        target=user,
        details={
            "token_key": instance.token_key,
            "expiry": instance.expiry.isoformat() if instance.expiry else None,
        },
    )
    return key, instance.expiry


@transaction.atomic
def token_revoke(*, user: User, token: AuthToken) -> None:
    """Revoke one token of `user` (the one the call was made with)."""
    token_key = token.token_key
    AuthToken.objects.filter(user=user, digest=token.digest).delete()
    audit_record(actor=user, action="token.revoke", target=user, details={"token_key": token_key})


@transaction.atomic
def token_revoke_all(*, user: User) -> int:
    """Revoke every token of `user`; returns how many there were."""
    count, _ = AuthToken.objects.filter(user=user).delete()
    audit_record(actor=user, action="token.revoke_all", target=user, details={"count": count})
    return count
