from django.apps import AppConfig


class CachestoreConfig(AppConfig):
    name = "cachestore"
    verbose_name = "Response cache"
