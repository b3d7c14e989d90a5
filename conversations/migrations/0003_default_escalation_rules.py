"""Starting escalation rules; operators edit them in the admin."""

from django.db import migrations

HANDOFF_PHRASES = {
    "en": [
        "speak to a human",
        "talk to a human",
        "speak to a person",
        "talk to a person",
        "speak with a human",
        "talk with a human",
        "speak with a person",
        "talk with a person",
        "speak to someone",
        "talk to someone",
        "real person",
        "real human",
        "human agent",
        "live agent",
        "speak to an agent",
        "talk to an agent",
        "customer service representative",
        "connect me * person",
        "connect me * human",
        "connect me * agent",
    ],
    "de": ["mit einem menschen", "mit einer person", "mit einem mitarbeiter", "echten menschen"],
    "fr": [
        "parler à un humain",
        "parler à une personne",
        "parler à un conseiller",
        "un vrai humain",
    ],
    "es": [
        "hablar con una persona",
        "hablar con un humano",
        "hablar con un agente",
        "agente humano",
    ],
    "nl": ["met een mens", "met een medewerker", "echte persoon"],
}
ANGRY_PHRASES = [
    "this is ridiculous",
    "unacceptable",
    "terrible service",
    "worst service",
    "useless",
    "fed up",
    "furious",
    "so angry",
    "waste of time",
    "i want to complain",
    "scam",
]


def add_rules(apps, schema_editor):
    EscalationRule = apps.get_model("conversations", "EscalationRule")
    rules = [
        EscalationRule(kind="handoff_phrase", pattern=phrase, language=language)
        for language, phrases in HANDOFF_PHRASES.items()
        for phrase in phrases
    ]
    rules += [
        EscalationRule(kind="angry", pattern=phrase, language="en") for phrase in ANGRY_PHRASES
    ]
    rules.append(EscalationRule(kind="abstain_streak", threshold=2))
    EscalationRule.objects.using(schema_editor.connection.alias).bulk_create(rules)


def remove_rules(apps, schema_editor):
    EscalationRule = apps.get_model("conversations", "EscalationRule")
    EscalationRule.objects.using(schema_editor.connection.alias).all().delete()


class Migration(migrations.Migration):
    dependencies = [("conversations", "0002_agent_workspace")]

    operations = [migrations.RunPython(add_rules, remove_rules)]
