# A new prompt version starts from the deployment's settings rather than numbers copied here.

from django.db import migrations, models

import studio.models


class Migration(migrations.Migration):
    dependencies = [
        ("studio", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="promptversion",
            name="history_tokens",
            field=models.PositiveIntegerField(default=studio.models.default_history_tokens),
        ),
        migrations.AlterField(
            model_name="promptversion",
            name="knowledge_tokens",
            field=models.PositiveIntegerField(default=studio.models.default_knowledge_tokens),
        ),
        migrations.AlterField(
            model_name="promptversion",
            name="max_tokens",
            field=models.PositiveIntegerField(default=studio.models.default_max_tokens),
        ),
        migrations.AlterField(
            model_name="promptversion",
            name="temperature",
            field=models.FloatField(default=studio.models.default_temperature),
        ),
    ]
