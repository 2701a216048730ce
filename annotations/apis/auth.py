from django.contrib.auth import authenticate
from django.contrib.auth.signals import user_logged_in, user_logged_out
from drf_spectacular.utils import extend_schema
from knox.models import AuthToken
from rest_framework import serializers, status
from rest_framework.exceptions import AuthenticationFailed, ValidationError
from rest_framework.parsers import FormParser, JSONParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from annotations.apis.authentication import TokenAuthentication
from annotations.auth_guard import cooloff_seconds, lockout_details, lockout_message
from annotations.services.auth import token_issue, token_revoke, token_revoke_all
from hitl.core.apis.errors import LockedOut
from hitl.core.apis.strict import StrictSerializer


class TokenApi(APIView):
    """Exchange username + password for an expiring API token (for scripts).

    Failures count towards the login lockout shared with the login page and the admin (django-axes): once
    the username or the client address is locked, the answer is 429 `locked_out`, even for the right
    password. The throttle is only a per-process burst limit on top."""

    permission_classes = [AllowAny]
    authentication_classes = [TokenAuthentication]  # gives 401 (not 403) on bad credentials
    parser_classes = [JSONParser, FormParser]  # scripts often post a form: `curl -d username=...`
    error_statuses = {"post": [401]}
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "login"

    class InputSerializer(StrictSerializer):
        username = serializers.CharField()
        password = serializers.CharField(style={"input_type": "password"})

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()
        expiry = serializers.DateTimeField(allow_null=True)

    @extend_schema(request=InputSerializer, responses=OutputSerializer, operation_id="auth_token")
    def post(self, request):
        ser = self.InputSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        # The request goes to authenticate() so that axes sees the client address, refuses a locked client
        # before the password is hashed, and counts a failure; it flags the request when it locks.
        user = authenticate(request, **ser.validated_data)
        if getattr(request, "axes_locked_out", False):
            raise LockedOut(lockout_message(), wait=cooloff_seconds(), details=lockout_details())
        if user is None or not user.is_active:
            raise AuthenticationFailed("wrong username or password")
        key, expiry = token_issue(user=user)
        # As a session login does (and knox's own view): audit and last_login follow the signal.
        user_logged_in.send(sender=user.__class__, request=request, user=user)
        return Response(self.OutputSerializer({"token": key, "expiry": expiry}).data)


def _token_of(request) -> AuthToken:
    if not isinstance(request.auth, AuthToken):
        raise ValidationError(
            {"detail": "this call revokes the token it is made with: send Authorization: Token"}
        )
    return request.auth


class TokenRevokeApi(APIView):
    """Revoke the token this call is made with (`Authorization: Token <key>`); it gets 401 from then on."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={204: None}, operation_id="auth_token_revoke")
    def post(self, request):
        token_revoke(user=request.user, token=_token_of(request))
        user_logged_out.send(sender=request.user.__class__, request=request, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenRevokeAllApi(APIView):
    """Revoke every token of the caller (e.g. after a key leaked), the one of this call included. Also
    callable from a browser session (with its CSRF token), which stays signed in."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={204: None}, operation_id="auth_token_revoke_all")
    def post(self, request):
        token_revoke_all(user=request.user)
        if isinstance(request.auth, AuthToken):  # the caller's own credential is gone: a logout
            user_logged_out.send(sender=request.user.__class__, request=request, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
