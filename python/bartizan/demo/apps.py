from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "bartizan.demo"
    label = "demo"
    verbose_name = "Bartizan demo"
