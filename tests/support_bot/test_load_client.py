"""The benchmark's customer (bench/load.py) reads a reply as the chat page does."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque

from django.db import connections
from django.db.migrations.executor import MigrationExecutor

from bench import load
from bench.load import CallResult, customer_call
from conversations.models import Conversation


class ScriptedSocket:
    """A websocket that answers with these frames, then stays silent."""

    def __init__(self, frames: list[dict]) -> None:
        self.frames = deque(json.dumps(frame) for frame in frames)
        self.sent: list[dict] = []
        self.sent_at: list[float] = []

    async def send(self, data: str) -> None:
        self.sent.append(json.loads(data))
        self.sent_at.append(time.monotonic())

    async def recv(self) -> str:
        if self.frames:
            return self.frames.popleft()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def test_it_follows_a_reply_that_another_worker_started_over_without_asking_to_resume():
    taken_over = 1_000_000  # the new attempt numbers its frames from here
    socket = ScriptedSocket(
        [
            {"type": "ack", "reply_id": 7},
            {"type": "reply.start", "reply_id": 7, "seq": 1},
            {"type": "reply.delta", "reply_id": 7, "seq": 2, "text": "Your parcel"},
            {"type": "reply.start", "reply_id": 7, "seq": taken_over + 1},
            {"type": "reply.delta", "reply_id": 7, "seq": taken_over + 2, "text": "Your parcel"},
            {"type": "reply.delta", "reply_id": 7, "seq": taken_over + 3, "text": " is here."},
            {
                "type": "reply.done",
                "reply_id": 7,
                "seq": taken_over + 4,
                "status": "done",
                "text": "Your parcel is here.",
            },
        ]  # fmt: skip
    )
    result = CallResult(index=0, text_sent="Where is my parcel?")

    asyncio.run(customer_call(socket, "Where is my parcel?", None, None, result, timeout_s=3))

    assert (result.ok, result.error) == (True, "")
    assert (result.restarts, result.resumes, result.missing_seqs) == (1, 0, 0)
    assert result.matches_done
    assert [frame["type"] for frame in socket.sent] == ["message"]


def test_it_asks_to_resume_when_a_frame_of_the_reply_went_missing():
    socket = ScriptedSocket(
        [
            {"type": "ack", "reply_id": 7},
            {"type": "reply.start", "reply_id": 7, "seq": 1},
            {"type": "reply.delta", "reply_id": 7, "seq": 3, "text": " is here."},
            {
                "type": "reply.done",
                "reply_id": 7,
                "seq": 4,
                "status": "done",
                "text": "Your parcel is here.",
            },
        ]  # fmt: skip
    )
    result = CallResult(index=0, text_sent="Where is my parcel?")

    asyncio.run(customer_call(socket, "Where is my parcel?", None, None, result, timeout_s=1))

    assert socket.sent[1] == {"type": "resume", "reply_id": 7, "after": 1}
    assert result.resumes == 1 and result.missing_seqs == 1


def test_it_asks_a_quiet_reply_to_resume_less_and_less_often_as_the_page_does(monkeypatch):
    monkeypatch.setattr(load, "STALL_RESUME_S", 0.1)
    monkeypatch.setattr(load, "STALL_RESUME_MAX_S", 0.4)
    socket = ScriptedSocket(
        [
            {"type": "ack", "reply_id": 7},
            {"type": "reply.start", "reply_id": 7, "seq": 1},
            {"type": "reply.waiting", "reply_id": 7, "seq": 2, "text": "One moment", "wait_s": 60},
        ]  # the reply waits for the model's budget: nothing more for a while
    )
    result = CallResult(index=0, text_sent="Where is my parcel?")

    asyncio.run(customer_call(socket, "Where is my parcel?", None, None, result, timeout_s=1.6))

    sent = zip(socket.sent, socket.sent_at, strict=True)
    asked = [at for frame, at in sent if frame["type"] == "resume"]
    gaps = [later - earlier for earlier, later in zip(asked, asked[1:], strict=False)]
    assert len(gaps) >= 2 and gaps[0] >= 0.18 and gaps[1] >= 0.36  # 0.1, then 0.2, 0.4, 0.4
    assert result.resumes == len(asked) and result.error == "timeout after 2s"


def test_it_seeds_a_compared_commits_database_whose_tables_lack_columns_added_since(
    second_database,
):
    """`--compare` runs an older commit on its own migrations (here 455c2ee's, the commit before
    issue 15, whose customers had no external_id); the bench still seeds it with this
    checkout's models, leaving out the columns the older tables do not have."""
    older = MigrationExecutor(connections[second_database])
    older.migrate([("conversations", "0010_unfinished_reply_index")])

    seats = load.create_seats(3, using=second_database)

    stored = Conversation.objects.using(second_database).values_list("pk", "customer_id")
    assert {(str(pk), str(customer)) for pk, customer in stored} == {
        (seat.conversation_id, seat.customer_id) for seat in seats
    }
