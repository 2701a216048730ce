from django.apps import AppConfig


class AnnotationsConfig(AppConfig):
    name = "annotations"
    verbose_name = "Clinical annotation"

    def ready(self) -> None:
        # Signal receivers, by exception: django.contrib.auth has no other hook for logins, logouts and
        # failed logins (of the login page, the admin and the token API alike), and they must be audited.
        from annotations.auth_events import connect

        connect()
