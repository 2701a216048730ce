import factory
from django.contrib.auth import get_user_model

from annotations.models import Membership, Modality, Project, Role
from workers.models import TrainingSettings

LABELS = [
    {"value": 1, "name": "organ", "color": "#ff0000"},
    {"value": 2, "name": "lesion", "color": "#00ff00"},
]


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw")


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"project {n}")
    modality = Modality.CT
    label_classes = factory.LazyFunction(lambda: [dict(c) for c in LABELS])


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.ANNOTATOR


class TrainingSettingsFactory(factory.django.DjangoModelFactory):
    """A project's ML settings row (a project without one reads the defaults)."""

    class Meta:
        model = TrainingSettings

    project = factory.SubFactory(ProjectFactory)
