"""The admin site itself (each app's admin.py registers its own models)."""

from django.contrib import admin

# "View site" would lead to "/", which the gateway does not serve (a 404):
# staff land on the operations dashboard instead.
admin.site.site_url = "/admin/dashboard/"
