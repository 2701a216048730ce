"""API token authentication: knox's, without its sweep of the owner's other tokens on every call."""

from django.utils import timezone
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox import auth
from knox.signals import token_expired


class TokenAuthentication(auth.TokenAuthentication):
    """`Authorization: Token <key>` against knox's hashed, expiring tokens.

    knox reads all of the owner's tokens on every request to delete the expired ones: one more query per
    API call (the reader queue's claim went from three statements to four). Here only the presented token's
    expiry is checked (an expired one is refused with 401 and deleted); the owner's other expired tokens
    are deleted at their next token login (services.auth.token_issue)."""

    def _cleanup_token(self, auth_token) -> bool:
        if auth_token.expiry is not None and auth_token.expiry < timezone.now():
            username = auth_token.user.get_username()
            auth_token.delete()
            token_expired.send(sender=self.__class__, username=username, source="auth_token")
            return True
        return False


class TokenScheme(KnoxTokenScheme):
    """The OpenAPI security scheme of the class above (drf-spectacular matches exact classes only)."""

    target_class = "annotations.apis.authentication.TokenAuthentication"
