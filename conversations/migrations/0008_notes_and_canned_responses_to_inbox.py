# Notes and canned responses move to the inbox app with their rows: first their tables take the
# inbox app's names here, then inbox 0001 adopts the models and conversations 0009 forgets them.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0007_unresolved_questions"),
    ]

    operations = [
        migrations.AlterModelTable(name="note", table="inbox_note"),
        migrations.AlterModelTable(name="cannedresponse", table="inbox_cannedresponse"),
    ]
