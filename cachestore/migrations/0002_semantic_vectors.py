# Reserved in the migration graph so that work landing in parallel in this app
# keeps one line of migrations; its operations are filled in by that work.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("cachestore", "0001_initial")]

    operations = []
