"""How assist reads a conversation (bot/assist.py): its topics, the latest open problem, and
the transcript within a budget. Plain lines in, no database."""

from __future__ import annotations

from bot.assist import Line, extractive_summary, latest_problem, topics, transcript


def customer(text: str) -> Line:
    return Line("customer", text)


def bot(text: str) -> Line:
    return Line("bot", text)


def test_it_makes_each_answered_exchange_a_topic_and_the_newest_the_problem():
    lines = [
        customer("Where is my parcel?"),
        bot("It is on its way [1]."),
        customer("How do I get a refund?"),
        bot("Send it back within 30 days [1]."),
        customer("My smart plug no longer switches on."),
    ]
    found = topics(lines)
    assert [t.messages for t in found] == [
        ("Where is my parcel?",),
        ("How do I get a refund?",),
        ("My smart plug no longer switches on.",),
    ]
    problem = latest_problem(found)
    assert problem is not None and problem.last == 4 and not problem.answered


def test_it_splits_two_questions_in_a_row_but_keeps_a_statement_with_its_question():
    two = topics([customer("Where is my parcel?"), customer("How do I return an item?")])
    assert [t.messages for t in two] == [("Where is my parcel?",), ("How do I return an item?",)]
    one = topics([customer("My plug arrived broken."), customer("Can I get a replacement?")])
    assert [t.messages for t in one] == [("My plug arrived broken.", "Can I get a replacement?")]


def test_it_keeps_a_follow_up_with_the_topic_before_it_even_after_an_answer():
    found = topics(
        [
            customer("How do I reset my password?"),
            bot("Use the link on the sign-in page [1]."),
            customer("How long is it valid?"),
        ]
    )
    assert [t.messages for t in found] == [("How do I reset my password?", "How long is it valid?")]


def test_small_talk_starts_no_topic_and_does_not_move_the_problem():
    lines = [customer("My plug is broken, what now?"), customer("hello??"), customer("thanks")]
    found = topics(lines)
    assert [t.messages for t in found] == [("My plug is broken, what now?",)]
    assert found[0].last == 0


def test_a_resolution_closes_every_topic_before_it():
    lines = [
        customer("Where is my parcel?"),
        bot("It is on its way."),
        Line("system", "This conversation was resolved.", resolves=True),
    ]
    assert latest_problem(topics(lines)) is None
    summary = extractive_summary(lines, ["Status: Resolved"])
    assert summary.splitlines()[0] == (
        "No open problem: the last one was resolved (Where is my parcel?)."
    )


def test_the_transcript_drops_the_oldest_turns_but_keeps_the_first_message():
    lines = [customer("First: where is my parcel?")]
    lines += [bot(f"Old answer number {i} [1]") for i in range(50)]
    lines += [customer("Latest: my plug is broken.")]

    text = transcript(lines, budget=60)

    rows = text.splitlines()
    assert rows[0] == "Customer: First: where is my parcel?"
    assert rows[-1] == "Customer: Latest: my plug is broken."
    assert rows[1].endswith("earlier message(s) left out]")
    kept = len(rows) - 3
    assert 0 < kept < 50 and rows[1] == f"[{50 - kept} earlier message(s) left out]"
    assert "[1]" not in text  # an answer's citations point at passages this prompt lacks


def test_the_transcript_is_whole_when_it_fits():
    lines = [customer("Where is my parcel?"), bot("On its way."), customer("Thanks!")]
    assert transcript(lines, budget=1000) == (
        "Customer: Where is my parcel?\nBot: On its way.\nCustomer: Thanks!"
    )
