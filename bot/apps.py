from django.apps import AppConfig


class BotAppConfig(AppConfig):
    name = "bot"
    verbose_name = "Bot"
