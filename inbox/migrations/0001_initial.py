# Notes and canned responses, adopted from the conversations app with their rows: the tables
# already carry this app's names (conversations 0008), and their content types, with the
# permissions and admin history that point to them, move here too.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

MOVED = ("note", "cannedresponse")


def content_types_to_inbox(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    moved = ContentType.objects.using(schema_editor.connection.alias).filter(model__in=MOVED)
    moved.filter(app_label="conversations").update(app_label="inbox")


def content_types_to_conversations(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    moved = ContentType.objects.using(schema_editor.connection.alias).filter(model__in=MOVED)
    moved.filter(app_label="inbox").update(app_label="conversations")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("conversations", "0008_notes_and_canned_responses_to_inbox"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="CannedResponse",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("shortcut", models.SlugField(max_length=40, unique=True)),
                        ("title", models.CharField(max_length=200)),
                        ("text", models.TextField(max_length=4000)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                    ],
                    options={"ordering": ["shortcut"]},
                ),
                migrations.CreateModel(
                    name="Note",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("text", models.TextField(max_length=4000)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "author",
                            models.ForeignKey(
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "conversation",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="notes",
                                to="conversations.conversation",
                            ),
                        ),
                    ],
                    options={"ordering": ["id"]},
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_types_to_inbox, content_types_to_conversations),
    ]
