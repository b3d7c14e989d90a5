"""Customer satisfaction: the customer rates a resolved conversation, once."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from .errors import CustomerRequestRefused
from .models import Conversation
from .state import conversation_changed

Status = Conversation.Status

COMMENT_MAX_CHARS = 2000


def validated_score(score: object) -> int:
    # bool is an int subclass: `true` is no score.
    if type(score) is not int or not 1 <= score <= 5:
        raise CustomerRequestRefused("bad_score", "Please choose a rating from 1 to 5.")
    return score


def validated_comment(comment: object) -> str:
    if comment is None:
        return ""
    if not isinstance(comment, str):
        raise CustomerRequestRefused("bad_comment", "The comment must be text.")
    comment = comment.strip()
    if len(comment) > COMMENT_MAX_CHARS:
        raise CustomerRequestRefused(
            "comment_too_long",
            f"Your comment is {len(comment)} characters long; the limit is {COMMENT_MAX_CHARS}.",
        )
    return comment


def rate(conversation: Conversation, score: object, comment: object = "") -> None:
    """The customer rates a resolved conversation, once: one conditional UPDATE, so a second
    rating (from another tab, at the same moment) is refused with `already_rated`."""
    score = validated_score(score)
    comment = validated_comment(comment)
    now = timezone.now()
    with transaction.atomic():
        rated = Conversation.objects.filter(
            pk=conversation.pk, status=Status.RESOLVED, rated_at__isnull=True
        ).update(rating=score, rating_comment=comment, rated_at=now, updated_at=now)
        if not rated:
            rated_at = (
                Conversation.objects.filter(pk=conversation.pk)
                .values_list("rated_at", flat=True)
                .first()
            )
            if rated_at is not None:
                raise CustomerRequestRefused(
                    "already_rated", "You have already rated this conversation. Thank you!"
                )
            raise CustomerRequestRefused(
                "not_resolved", "You can rate this conversation once it has been resolved."
            )
        conversation.rating, conversation.rating_comment, conversation.rated_at = (
            score,
            comment,
            now,
        )
        conversation_changed(conversation.pk)
