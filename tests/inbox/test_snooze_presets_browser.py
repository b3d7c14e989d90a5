"""Snooze presets on the agent's conversation page (issue 17, point 8), in Chromium against
the real app: "Tomorrow 9:00" snoozes until 9:00 tomorrow in the agent's own time zone (the
browser's, here New York while the server runs in UTC), sent as an ISO time to the snooze
endpoint; "Next Monday 9:00" and "1 hour" are computed the same way; "Custom…" shows the
date-time picker."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from conversations.models import Conversation
from tests import personas
from tests.inbox.test_inbox_browser import agent_context

alice_agent = personas.alice_agent

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.default_pass_only(
        reason="the browser computes the time; the snooze endpoint is tested on both paths"
    ),
]

NEW_YORK = ZoneInfo("America/New_York")


def tomorrow_at_nine(now: datetime) -> datetime:
    local = now.astimezone(NEW_YORK)
    return datetime.combine(local.date() + timedelta(days=1), time(9), tzinfo=NEW_YORK)


def test_it_snoozes_until_tomorrow_nine_in_the_agents_time_zone(
    chromium, asgi_server, alice_agent, alice_conversation
):
    # Waiting for a person (plain rows: the services' events need no loop of their own here,
    # where Playwright's runs).
    Conversation.objects.filter(pk=alice_conversation.pk).update(
        status=Conversation.Status.PENDING, escalated_at=datetime.now(UTC)
    )
    pending = alice_conversation
    base = asgi_server()
    context = agent_context(chromium, base, alice_agent, timezone_id="America/New_York")
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(f"{base}/agent/conversations/{pending.pk}/")
        page.wait_for_selector(".connection-status[data-state=connected]")

        # The picker stays out of the way until "Custom…".
        picker = page.get_by_label("Snooze until")
        assert not picker.is_visible()
        page.get_by_role("button", name="Custom…").click()
        assert picker.is_visible()
        page.get_by_role("button", name="Custom…").click()
        assert not picker.is_visible()

        # The presets' arithmetic in the browser's zone: a Sunday afternoon and a Monday.
        until = (
            "(y, m, d, h, preset) => "
            "SnoozePresets.until(preset, new Date(y, m, d, h)).toISOString()"
        )
        assert (
            page.evaluate(f"({until})(2026, 11, 6, 15, 'next-week')") == "2026-12-07T14:00:00.000Z"
        )
        assert (
            page.evaluate(f"({until})(2026, 11, 7, 8, 'next-week')") == "2026-12-14T14:00:00.000Z"
        )
        assert page.evaluate(f"({until})(2026, 2, 7, 22, 'tomorrow')") == "2026-03-08T13:00:00.000Z"
        assert page.evaluate(f"({until})(2026, 11, 6, 23, 'hour')") == "2026-12-07T05:00:00.000Z"

        # Pointing at a preset tells the time it means, in the agent's zone.
        tomorrow = page.get_by_role("button", name="Tomorrow 9:00")
        tomorrow.hover()
        assert tomorrow.get_attribute("title").endswith("9:00 AM")

        before = datetime.now(UTC)
        page.get_by_role("button", name="Tomorrow 9:00").click()
        page.wait_for_selector(".conversation-state:has-text('Snoozed until')")
        after = datetime.now(UTC)

        conversation = Conversation.objects.get(pk=pending.pk)
        assert conversation.status == Conversation.Status.SNOOZED
        assert conversation.snoozed_until in {tomorrow_at_nine(before), tomorrow_at_nine(after)}
        # Shown back in the agent's zone, and no preset offered while it sleeps.
        assert "9:00:00 AM" in page.locator(".conversation-state").inner_text()
        assert page.get_by_role("button", name="Snooze 1 hour").is_disabled()
    finally:
        context.close()
