# Reserved in the migration graph so that work landing in parallel in this app
# keeps one line of migrations; its operations are filled in by that work.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("proxy", "0009_guardrails")]

    operations = []
