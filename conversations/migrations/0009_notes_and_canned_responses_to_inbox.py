# The inbox app owns notes and canned responses now (inbox 0001): forget them here, leaving
# their tables and rows to it.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0008_notes_and_canned_responses_to_inbox"),
        ("inbox", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="Note"),
                migrations.DeleteModel(name="CannedResponse"),
            ],
            database_operations=[],
        ),
    ]
