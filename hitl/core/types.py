"""Types the apps share in their signatures.

`User` is the user model: Django's default `auth.User` (AUTH_USER_MODEL is not set), what services and
selectors take wherever the caller is signed in (the API's IsAuthenticated, the pages' login_required).
`AnyUser` is `request.user` before any such check, which may be anonymous: only what accepts that (the
audit trail) takes it. Import this module only once the app registry is loading (as models are)."""

from typing import TypeAlias

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser, User

AnyUser: TypeAlias = AbstractBaseUser | AnonymousUser

__all__ = ["AnyUser", "User"]
