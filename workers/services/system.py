from workers.models import TaskProbe


def ping_record(*, token: str) -> None:
    TaskProbe.objects.update_or_create(token=token, defaults={})
