from django.db import models


class TaskProbe(models.Model):
    """A row written by the `ping` task: proof that a worker consumed a message and reached the DB."""

    token = models.CharField(max_length=64, unique=True)
    done_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.token
