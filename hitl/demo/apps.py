from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo seeder (`manage.py seed_demo`): it composes both apps (a project and its readers on the
    clinical side, images and a first model on the machine side), so it lives beside the URL conf, above
    them, rather than in either."""

    name = "hitl.demo"
    label = "demo"
    verbose_name = "Demo data"
