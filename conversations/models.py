"""Tickets and their turns. Each method here changes one row, atomically; workflows that span
rows live in services.py."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, models
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.functions import Now
from django.urls import reverse
from django.utils import timezone

from support_bot.config_cache import ConfigQuerySet

from .origins import normalise_origin


def display_name(user: Any) -> str:
    """A team member's name as customers and colleagues see it: first name, else username."""
    return str(user.get_short_name() or user.get_username())


def staff_name(user: Any) -> str | None:
    """display_name, or None for nobody (an unassigned conversation, a deleted agent)."""
    return display_name(user) or None if user is not None else None


class Customer(models.Model):
    """A visitor, recognised by a signed cookie or widget token that carries this id: anonymous,
    or a signed-in user of the host site identified by its `external_id` (identity.py)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    display_name = models.CharField(max_length=200, blank=True)
    email = models.EmailField(blank=True)
    # The host site's user id, verified by its user_hash; NULL for anonymous visitors (unique
    # ignores NULLs).
    external_id = models.CharField(  # noqa: DJ001
        max_length=255, unique=True, null=True, blank=True, editable=False
    )
    # What the host site says about its identified user (`identify`'s flat `attributes`:
    # strings, numbers, booleans; conversations/context.py checks and clips them).
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.display_name or f"Visitor {str(self.id)[:8]}"


class Conversation(models.Model):
    """A ticket: one customer's conversation with the bot and the team."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        PENDING = "pending", "Pending (waiting for a person)"
        SNOOZED = "snoozed", "Snoozed"
        RESOLVED = "resolved", "Resolved"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="conversations")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assigned_conversations",
    )

    class Escalation(models.TextChoices):
        CUSTOMER_REQUEST = "customer_request", "The customer asked for a person"
        ABSTAINED = "abstained", "The bot could not answer twice in a row"
        ANGRY = "angry", "The customer is upset"
        KEYWORD = "keyword", "An operator's keyword"
        AGENT = "agent", "An agent took it over"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_message_at = models.DateTimeField(null=True, blank=True)
    # The last time the customer wrote: agents' waiting time and unread count start here.
    last_customer_message_at = models.DateTimeField(null=True, blank=True)
    # Customer turns after this are unread for the team.
    agent_read_at = models.DateTimeField(null=True, blank=True)

    # Handoff: when and why a person was asked for (kept after the conversation is handed back).
    escalated_at = models.DateTimeField(null=True, blank=True, db_index=True)
    escalation_reason = models.CharField(max_length=24, choices=Escalation.choices, blank=True)
    # Asked for outside business hours, so the team can answer by email.
    contact_email = models.EmailField(blank=True)
    snoozed_until = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    # Customer satisfaction, asked once the conversation is resolved; given at most once.
    rating = models.PositiveSmallIntegerField(null=True, blank=True)
    rating_comment = models.TextField(blank=True, max_length=2000)
    rated_at = models.DateTimeField(null=True, blank=True)

    # Where and in what the chat started, recorded once when the conversation is stored
    # (conversations/context.py): checked and clipped, "" when unknown or refused.
    started_page_url = models.CharField(max_length=2000, blank=True)
    started_referrer = models.CharField(max_length=2000, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    # Parsed from user_agent once, e.g. "Chrome 131 on Windows": rows show it without parsing.
    browser = models.CharField(max_length=120, blank=True)
    browser_language = models.CharField(max_length=35, blank=True)
    time_zone = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["customer", "-created_at"]),
            models.Index(fields=["status", "-last_customer_message_at"]),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(rating__isnull=True) | Q(rating__gte=1, rating__lte=5),
                name="rating_between_1_and_5",
            )
        ]
        permissions = [
            ("work_inbox", "Can work the agent inbox: view, take over and reply"),
            ("write_note", "Can write internal notes"),
            ("resolve_conversation", "Can resolve, snooze and reopen conversations"),
            ("export_conversations", "Can export transcripts"),
        ]

    def __str__(self) -> str:
        return f"Conversation {str(self.id)[:8]} ({self.get_status_display()})"

    @property
    def bot_answers(self) -> bool:
        """The bot replies only while the conversation is open and no person owns it: not
        after a person was asked for (pending), nor while an agent has it (assignee set),
        nor while snoozed or resolved. Handing back to the bot = open and unassigned."""
        return self.status == self.Status.OPEN and self.assignee_id is None


class TurnQuerySet(models.QuerySet["Turn"]):
    def shown(self) -> TurnQuerySet:
        """Turns anyone reads or a model is given: without withdrawn replies (queued for the
        bot, then the conversation went to a person before a worker claimed them; they never
        had any text)."""
        return self.exclude(status=Turn.Status.WITHDRAWN)

    def dialogue(self) -> TurnQuerySet:
        """The conversation as a model reads it (prompts, evaluation cases, fine-tuning data):
        what the customer, the bot and agents said, without system notices, failed replies
        (apologies) or withdrawn ones."""
        return self.shown().exclude(status=Turn.Status.FAILED).exclude(author=Turn.Author.SYSTEM)


class Turn(models.Model):
    """One message in a conversation. Bot turns also carry the state of their generation."""

    class Author(models.TextChoices):
        CUSTOMER = "customer", "Customer"
        BOT = "bot", "Bot"
        AGENT = "agent", "Agent"
        SYSTEM = "system", "System"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        STREAMING = "streaming", "Streaming"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        # Queued, but the conversation went to a person before a worker claimed it: never
        # written, never shown.
        WITHDRAWN = "withdrawn", "Withdrawn"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="turns")
    author = models.CharField(max_length=16, choices=Author.choices)
    text = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The id the customer's browser gave the message: sending it twice stores it once.
    # NULL, not "", for turns without one: the unique constraint must ignore them.
    client_message_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Agent turns only: when the email carrying it to a customer who had not seen it was sent
    # (claimed just before; conversations/email_replies.py). Set at most once.
    emailed_at = models.DateTimeField(null=True, blank=True)

    # Bot turns only.
    reply_to = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="reply"
    )
    status = models.CharField(max_length=16, choices=Status.choices, blank=True)
    # Bumped by every claim; a worker may only finish the attempt it claimed (a fencing token).
    attempt = models.PositiveSmallIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    provider = models.CharField(max_length=40, blank=True)
    model = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    first_token_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="From the customer's message to the first token."
    )
    duration_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="From the customer's message to the end of the reply."
    )
    sources = models.JSONField(default=list, blank=True)
    abstained = models.BooleanField(default=False)
    error_code = models.CharField(max_length=40, blank=True)
    # The prompt version that produced this reply, and what its tokens cost (ModelPrice).
    prompt_version = models.ForeignKey(
        "studio.PromptVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    cost = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)

    objects = TurnQuerySet.as_manager()

    # Not a field: the files attachments.store just wrote with this turn (see attached_files).
    stored_attachments: list[Attachment] | None = None

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "client_message_id"],
                condition=Q(client_message_id__isnull=False),
                name="one_turn_per_client_message",
            )
        ]
        indexes = [
            models.Index(fields=["conversation", "-id"]),
            # The sweeper's look at unfinished replies (recovery.py), every second per worker.
            models.Index(
                fields=["status", "claimed_at"],
                name="unfinished_reply",
                condition=Q(status__in=["queued", "streaming"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_author_display()}: {self.text[:60]}"

    @property
    def is_active_reply(self) -> bool:
        return self.author == self.Author.BOT and self.status in (
            self.Status.QUEUED,
            self.Status.STREAMING,
        )

    @classmethod
    def claim_reply(cls, turn_id: int, lease_s: float) -> Turn | None:
        """Take a queued reply for generation, or one whose worker was lost (lease expired).

        Returns None when the reply is already being written or is finished: a duplicated or
        redelivered task then does nothing.
        """
        # Leases are dated and compared by the database's clock (docs/operations.md): workers
        # on hosts whose clocks differ agree on them, and a lease starts when the claim runs,
        # not before a wait for a pooled connection.
        if connection.vendor == "postgresql":
            return _claim_in_one_statement(turn_id, lease_s)
        claimable = Q(status=cls.Status.QUEUED) | Q(
            status=cls.Status.STREAMING, claimed_at__lt=Now() - timedelta(seconds=lease_s)
        )
        claimed = cls.objects.filter(claimable, pk=turn_id, author=cls.Author.BOT).update(
            status=cls.Status.STREAMING, claimed_at=Now(), attempt=F("attempt") + 1
        )
        if not claimed:
            return None
        return cls.objects.select_related("conversation", "reply_to").get(pk=turn_id)

    def finish_reply(self, *, status: str, **fields: Any) -> bool:
        """Store the outcome, unless another worker has claimed this reply since."""
        fields.update(status=status, finished_at=timezone.now())
        updated = Turn.objects.filter(
            pk=self.pk, status=self.Status.STREAMING, attempt=self.attempt
        ).update(**fields)
        if updated:
            for name, value in fields.items():
                setattr(self, name, value)
        return bool(updated)

    @property
    def offers_person(self) -> bool:
        """Whether this is a bot reply that ends by offering the customer a person ("Would you
        like me to connect you with a person from our team?"): every abstention does, in the
        customer's language (bot/wording.py: `abstain`, `out_of_domain`), whoever abstained
        (retrieval, or a model's no-answer marker). The customer's yes to it hands the
        conversation over (escalation.accepts_offered_person), and the page shows a "Connect
        me" button under it (`offers_handoff`)."""
        return self.author == self.Author.BOT and self.status == self.Status.DONE and self.abstained

    def as_event(self) -> dict[str, Any]:
        """The turn as the websocket protocol shows it."""
        return {
            "id": self.pk,
            "author": self.author,
            "text": self.text,
            "created": self.created_at.isoformat(),
            "client_id": self.client_message_id,
            "status": self.status or None,
            # `n` is the number the text cites a source by ("[2]"); None for sources stored
            # before answers cited by number.
            "sources": [
                {
                    "n": s.get("n"),
                    "title": s.get("title", ""),
                    "url": s.get("url", ""),
                    "article_id": s.get("article_id"),
                }
                for s in self.sources
            ],
            "author_name": staff_name(self.agent) if self.agent_id else None,
            "offers_handoff": self.offers_person,
            "attachments": [a.as_event() for a in self.attached_files()],
        }

    def attached_files(self) -> Sequence[Attachment]:
        """Only customers and agents attach files: other turns cost no query, and neither does
        a turn just written (attachments.store tells it what it stored)."""
        if self.author not in (self.Author.CUSTOMER, self.Author.AGENT):
            return []
        if self.stored_attachments is not None:
            return self.stored_attachments
        return list(self.attachments.all())


# --- Attachments (docs/attachments.md; checked and stored by attachments.py) ------------------


def _attachment_path(instance: Attachment, filename: str) -> str:
    # Random, not the customer's name: nothing about the file can be guessed from its path.
    return f"attachments/{uuid.uuid4().hex}{Path(filename).suffix}"


class Attachment(models.Model):
    """A file a customer or an agent attached to a turn: an image or a PDF, served only to the
    conversation's customer and the team (views at /chat/attachments/<id>/)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="attachments")
    file = models.FileField(upload_to=_attachment_path, max_length=200)
    # Images only: a small copy for the transcript.
    thumbnail = models.FileField(upload_to=_attachment_path, max_length=200, blank=True)
    name = models.CharField(max_length=160, help_text="The file's name, made safe.")
    content_type = models.CharField(max_length=40)
    size = models.PositiveBigIntegerField()
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/")

    def as_event(self) -> dict[str, Any]:
        url = reverse("attachment", args=[self.pk])
        return {
            "id": str(self.pk),
            "name": self.name,
            "content_type": self.content_type,
            "size": self.size,
            "width": self.width,
            "height": self.height,
            "url": url,
            "thumbnail_url": f"{url}?thumbnail=1" if self.thumbnail else None,
            "download_url": f"{url}?download=1",
        }


class UnresolvedQuestion(Turn):
    """A bot reply seen from the customer's question it didn't resolve: the bot abstained
    (nothing in the knowledge base was good enough, or the model found no answer in it), or it
    answered and the customer then asked for a person (or was upset) before any other reply.
    These are the knowledge base's gaps and look-alikes, for operators to fill with an article
    or to teach as example questions (knowledge.ExampleQuestion)."""

    #: The escalations after an answer that say it didn't help.
    UNHELPED = (Conversation.Escalation.CUSTOMER_REQUEST, Conversation.Escalation.ANGRY)

    class Meta:
        proxy = True
        ordering = ["-id"]
        verbose_name = "unresolved question"

    @classmethod
    def to_review(cls) -> models.QuerySet[UnresolvedQuestion]:
        later_reply = Turn.objects.filter(
            conversation=OuterRef("conversation"),
            author=Turn.Author.BOT,
            id__gt=OuterRef("id"),
            created_at__lt=OuterRef("conversation__escalated_at"),
        ).exclude(status=Turn.Status.WITHDRAWN)
        answered_then_escalated = Q(
            abstained=False,
            conversation__escalation_reason__in=cls.UNHELPED,
            conversation__escalated_at__gt=F("created_at"),
        ) & ~Exists(later_reply)
        return models.QuerySet(cls).filter(
            Q(abstained=True) | answered_then_escalated,
            author=Turn.Author.BOT,
            status=Turn.Status.DONE,
            reply_to__isnull=False,
        )


class EscalationRule(models.Model):
    """When the bot hands a conversation to a person by itself. Operators edit these."""

    class Kind(models.TextChoices):
        HANDOFF_PHRASE = "handoff_phrase", "The customer asks for a person (phrase)"
        ANGRY = "angry", "The customer is upset (phrase)"
        KEYWORD = "keyword", "An operator's keyword"
        ABSTAIN_STREAK = "abstain_streak", "The bot could not answer N times in a row"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    # A phrase, matched case- and accent-insensitively on word boundaries; "*" matches any
    # words in between ("speak * human"). Unused by ABSTAIN_STREAK.
    pattern = models.CharField(max_length=200, blank=True)
    # ABSTAIN_STREAK: how many abstentions in a row.
    threshold = models.PositiveSmallIntegerField(default=2)
    language = models.CharField(max_length=12, blank=True, help_text="Empty: any language.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # Read through support_bot.config_cache: bulk writes must announce themselves.
    objects = ConfigQuerySet.as_manager()

    class Meta:
        ordering = ["kind", "pattern"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.pattern or self.threshold}"


class BusinessHours(models.Model):
    """When people answer: one row per opening period of a weekday, in SUPPORT_TIME_ZONE.
    No rows at all means always open."""

    class Weekday(models.IntegerChoices):
        MONDAY = 0, "Monday"
        TUESDAY = 1, "Tuesday"
        WEDNESDAY = 2, "Wednesday"
        THURSDAY = 3, "Thursday"
        FRIDAY = 4, "Friday"
        SATURDAY = 5, "Saturday"
        SUNDAY = 6, "Sunday"

    weekday = models.PositiveSmallIntegerField(choices=Weekday.choices)
    opens = models.TimeField()
    closes = models.TimeField()

    # Read through support_bot.config_cache: bulk writes must announce themselves.
    objects = ConfigQuerySet.as_manager()

    class Meta:
        ordering = ["weekday", "opens"]
        verbose_name_plural = "business hours"
        constraints = [
            models.CheckConstraint(condition=Q(opens__lt=F("closes")), name="opens_before_closes")
        ]

    def __str__(self) -> str:
        return f"{self.get_weekday_display()} {self.opens:%H:%M}-{self.closes:%H:%M}"


class WidgetSite(models.Model):
    """A site whose pages may embed the chat widget: one origin (scheme, host and port), as a
    browser sends it. Read through support_bot.config_cache (conversations/embedding.py)."""

    origin = models.CharField(
        max_length=255,
        unique=True,
        help_text="scheme://host[:port] of the pages that embed the widget, e.g. "
        "https://www.example.com (http://localhost:8102 for a local trial). Each port and "
        "scheme is another site.",
    )
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ConfigQuerySet.as_manager()

    class Meta:
        ordering = ["origin"]
        verbose_name = "site allowed to embed the widget"
        verbose_name_plural = "sites allowed to embed the widget"

    def __str__(self) -> str:
        return self.origin

    def clean(self) -> None:
        try:
            self.origin = normalise_origin(self.origin)
        except ValueError as error:
            raise ValidationError({"origin": str(error)}) from None


# --- The first screen (issue 16.3): what a visitor sees before their first message ---------------


class Greeting(models.Model):
    """The chat's first words to a visitor, in a language (empty: any other). No row for a
    language: the bot's own greeting in it (bot/wording.py). Read through
    support_bot.config_cache (conversations/first_screen.py)."""

    language = models.CharField(
        max_length=12,
        blank=True,
        unique=True,
        help_text="ISO 639-1 code (en, de, fr…) of the visitors it greets; empty: any language "
        "without a greeting of its own.",
    )
    text = models.CharField(max_length=500)

    objects = ConfigQuerySet.as_manager()

    class Meta:
        ordering = ["language"]

    def __str__(self) -> str:
        return f"{self.language or 'any language'}: {self.text[:60]}"

    def clean(self) -> None:
        self.language = clean_language(self.language)


class SuggestedQuestion(models.Model):
    """A question offered on the first screen; a click sends it as the visitor's message.
    Visitors see the enabled ones in their language, else those for any language, in order."""

    text = models.CharField(max_length=120)
    language = models.CharField(
        max_length=12,
        blank=True,
        help_text="ISO 639-1 code (en, de, fr…); empty: shown in any language that has no "
        "suggestions of its own.",
    )
    position = models.PositiveSmallIntegerField(default=0, help_text="Lower shows first.")
    enabled = models.BooleanField(default=True)

    objects = ConfigQuerySet.as_manager()

    class Meta:
        ordering = ["language", "position", "id"]

    def __str__(self) -> str:
        return self.text

    def clean(self) -> None:
        self.language = clean_language(self.language)
        self.text = self.text.strip()


def clean_language(language: str) -> str:
    """ "DE", " de-CH " → "de": visitors are matched by their language's primary code."""
    code = language.strip().lower().replace("_", "-").split("-", 1)[0]
    if code and not re.fullmatch(r"[a-z]{2,3}", code):
        raise ValidationError({"language": "Use a language code such as en, de or fr."})
    return code


# --- The claim in one statement (PostgreSQL) ---------------------------------------------------
# Every reply starts with a claim, and the ORM's UPDATE and then SELECT with two joins cost
# more to compile (~0.9 ms of CPU) than to run: on PostgreSQL the claim is one statement,
# written once a process from the models' own fields, with the same conditions and the same
# database clock (STATEMENT_TIMESTAMP() is what Now() compiles to there).


@dataclass(frozen=True)
class _RowReader:
    """How to read one model's columns from a raw row, worked out once a process: the claim
    runs at the start of every reply."""

    width: int
    attnames: list[str]
    converters: list[tuple[models.Field[Any, Any], list[Any]]]

    @classmethod
    def of(cls, model: type[models.Model]) -> _RowReader:
        fields = list(model._meta.concrete_fields)
        return cls(
            width=len(fields),
            attnames=[f.attname for f in fields],
            converters=[(f, f.get_db_converters(connection)) for f in fields],
        )

    def read(self, model: type[_M], values: Sequence[Any]) -> _M:
        """A model instance from its columns' values, converted as the ORM converts them."""
        converted = []
        for (field, converters), value in zip(self.converters, values, strict=True):
            for convert in converters:
                value = convert(value, field, connection)
            converted.append(value)
        return model.from_db(connection.alias, self.attnames, converted)


_M = TypeVar("_M", bound=models.Model)


@functools.cache
def _reader(model: type[models.Model]) -> _RowReader:
    return _RowReader.of(model)


@functools.cache
def _claim_sql() -> str:
    q = connection.ops.quote_name
    turn, conversation = Turn._meta.db_table, Conversation._meta.db_table

    def select(alias: str, model: type[models.Model]) -> str:
        return ", ".join(f"{alias}.{q(str(f.column))}" for f in model._meta.concrete_fields)

    # Names from the models' metadata only: nothing from outside is spliced in.
    return (
        f"WITH claimed AS (UPDATE {q(turn)} SET status = %s, "  # noqa: S608
        "claimed_at = STATEMENT_TIMESTAMP(), attempt = attempt + 1 "
        "WHERE id = %s AND author = %s AND (status = %s OR (status = %s "
        "AND claimed_at < STATEMENT_TIMESTAMP() - make_interval(secs => %s))) RETURNING *) "
        f"SELECT {select('claimed', Turn)}, {select('c', Conversation)}, "
        f"{select('q', Turn)} FROM claimed "
        f"JOIN {q(conversation)} c ON c.id = claimed.conversation_id "
        f"LEFT JOIN {q(turn)} q ON q.id = claimed.reply_to_id"
    )


def _claim_in_one_statement(turn_id: int, lease_s: float) -> Turn | None:
    Status = Turn.Status
    params: list[str | int | float] = [
        Status.STREAMING,
        turn_id,
        Turn.Author.BOT,
        Status.QUEUED,
        Status.STREAMING,
        lease_s,
    ]
    with connection.cursor() as cursor:
        cursor.execute(_claim_sql(), params)
        row = cursor.fetchone()
    if row is None:
        return None
    turns, conversations = _reader(Turn), _reader(Conversation)
    reply = turns.read(Turn, row[: turns.width])
    conversation = conversations.read(
        Conversation, row[turns.width : turns.width + conversations.width]
    )
    Turn.conversation.field.set_cached_value(reply, conversation)
    asked = row[turns.width + conversations.width :]
    question = turns.read(Turn, asked) if asked[0] is not None else None
    Turn.reply_to.field.set_cached_value(reply, question)
    if question is not None:
        Turn.reply_to.field.remote_field.set_cached_value(question, reply)
    return reply
