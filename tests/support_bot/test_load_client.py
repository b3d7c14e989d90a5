"""The benchmark's customer (bench/load.py) reads a reply as the chat page does."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import replace

import pytest
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


def test_base_set_changes_only_the_compared_stacks_environment_and_says_so_in_its_label():
    """`--compare HEAD --base-set KB_EMBEDDINGS=off` measures what a part costs against the same
    code in the same run; `--set` still goes to every stack."""
    opts = load.parse_options(
        ["--compare", "HEAD", "--set", "A=1", "--base-set", "KB_EMBEDDINGS=off"]
    )
    assert opts.extra_env == {"A": "1"}
    assert opts.base_extra_env == {"KB_EMBEDDINGS": "off"}

    env = {"A": "1"}
    label, replies_as_floor = load.with_base_settings(opts, env, "base abc123 (HEAD)")
    assert env == {"A": "1", "KB_EMBEDDINGS": "off"}
    assert label == "base abc123 (HEAD) with KB_EMBEDDINGS=off" and not replies_as_floor

    # Its replies answer other prompts than the floor's: each is checked against its own
    # reply.done text instead (as a second message's is).
    prompt = [{"role": "user", "content": "[n3#1:0] Hello!"}]
    assert load.expected_of_stack(prompt, opts) == load.expected_tokens(prompt, opts)
    assert load.expected_of_stack(prompt, replace(opts, replies_as_floor=False)) is None

    plain = load.parse_options(["--compare", "HEAD"])
    unchanged = {"A": "1"}
    assert load.with_base_settings(plain, unchanged, "base") == ("base", True)
    assert unchanged == {"A": "1"}


def test_base_set_without_a_compared_commit_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        load.parse_options(["--base-set", "KB_EMBEDDINGS=off"])
    assert "--base-set sets the --compare stack's environment" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load.parse_options(["--compare", "HEAD", "--base-set", "KB_EMBEDDINGS"])
    assert "--base-set needs NAME=VALUE" in capsys.readouterr().err


def test_every_round_asks_questions_of_its_own_so_none_finds_its_vector_already_shared(
    monkeypatch,
):
    """A question asked again within 30 s finds its vector in Redis (knowledge/search/ahead.py)
    and is not embedded: a repeated burst (`--n 50,50`), or the burst the warm-up had the size
    of, must not ask what an earlier round asked."""
    burst = load.RoundSpec("burst", 3)
    # The grounded prompt around each question needs the demo knowledge base; the question is
    # what matters here.
    monkeypatch.setattr(
        load, "grounded_messages", lambda system, text: [{"role": "user", "content": text}]
    )

    def questions(index: int) -> set[str]:
        plan = load.plan_round(burst, index, "system", seed=1)
        return {messages[-1]["content"] for messages in plan.prompts}

    warm_up, first, again = questions(-1), questions(0), questions(1)
    assert len(warm_up) == len(first) == len(again) == 3
    assert not (warm_up & first) and not (first & again) and not (warm_up & again)
    assert questions(0) == first  # the floor and every stack of a round ask the same
