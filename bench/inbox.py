"""How fast is the agent inbox at scale? Seeds a FRESH Postgres database of its own with
100,000 conversations and 2,000,000 turns (SQL generate_series: a few minutes), then times
/agent/api/inbox/ through Django's test Client (the real URL, middleware, session, view,
selector and JSON: everything but the socket) for the first page, filtered views, a second
page and searches, and prints p50/p95 per scenario against the 300 ms target (issue 17).

    .venv/bin/python bench/inbox.py [--conversations 100000] [--turns 2000000] [--requests 50]
        [--server postgres://postgres@127.0.0.1:5432] [--database sb_inbox_bench] [--keep]

The database is dropped and created again at the start and dropped at the end (--keep leaves
it for EXPLAIN). Nothing else is touched: no Redis (the inbox's list reads only the database).
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_MS = 300.0
# Words of the seeded messages, the first far more frequent than the last (Zipf-like).
WORDS = [
    "order",
    "parcel",
    "refund",
    "delivery",
    "account",
    "password",
    "invoice",
    "payment",
    "shipping",
    "return",
    "address",
    "login",
    "subscription",
    "discount",
    "warranty",
    "broken",
    "lamp",
    "charger",
    "battery",
    "screen",
    "cable",
    "tracking",
    "cancel",
    "upgrade",
    "plan",
    "email",
    "phone",
    "support",
    "store",
    "size",
    "colour",
    "exchange",
    "label",
    "courier",
]
RARE = "xylophone"  # in a handful of turns only


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--turns", type=int, default=2_000_000)
    parser.add_argument("--requests", type=int, default=50, help="timed requests per scenario")
    parser.add_argument(
        "--server", default=os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
    )
    parser.add_argument("--database", default="sb_inbox_bench")
    parser.add_argument("--keep", action="store_true", help="leave the database afterwards")
    parser.add_argument(
        "--measure-only",
        action="store_true",
        help="time the database a --keep run left (no new seed)",
    )
    return parser.parse_args(argv)


def recreate_database(server: str, name: str, *, drop_only: bool = False) -> None:
    import psycopg

    if not name.replace("_", "").isalnum():
        raise SystemExit(f"not a database name: {name!r}")
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            admin.execute(f'CREATE DATABASE "{name}"')


def seed(conversations: int, turns: int) -> dict[str, object]:
    """Customers, conversations (5% pending and waiting, 20% with the bot, 5% snoozed, the rest
    resolved; a third assigned), turns alternating customer / bot, labels on a tenth."""
    from django.contrib.auth.models import Group, User
    from django.db import connection

    from inbox.models import Label

    search = importlib.import_module("inbox.migrations.0002_triage")
    per = max(2, turns // conversations)
    agents = []
    for n in range(3):
        user = User.objects.create_user(f"bench_agent_{n}", first_name=f"Agent {n}", is_staff=True)
        user.groups.add(Group.objects.get(name="Agents"))
        agents.append(user.pk)
    labels = [Label.objects.create(name=name).pk for name in ("Billing", "Bug", "VIP", "Returns")]
    words = "ARRAY[" + ",".join(f"'{w}'" for w in WORDS) + "]"
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(0.17)")
        # The search indexes are built once after the rows, not row by row.
        for statement in search.PG_SEARCH_DROP:
            cursor.execute(statement)
        # inbox_waiting is filled once after the rows (BACKFILL), not by a trigger per turn.
        cursor.execute("ALTER TABLE conversations_turn DISABLE TRIGGER inbox_waiting_turn")
        cursor.execute(
            """
            INSERT INTO conversations_customer
                (id, display_name, email, external_id, created_at, attributes)
            SELECT gen_random_uuid(), 'Customer ' || i, 'customer' || i || '@example.com',
                   CASE WHEN i %% 2 = 0 THEN 'user-' || i END, now() - i * interval '30 s',
                   '{}'::jsonb
            FROM generate_series(1, %s) i
            """,
            [conversations],
        )
        cursor.execute(
            """
            INSERT INTO conversations_conversation
                (id, customer_id, status, assignee_id, created_at, updated_at, last_message_at,
                 last_customer_message_at, escalation_reason, contact_email, rating,
                 rating_comment, browser, browser_language, started_page_url, started_referrer,
                 time_zone, user_agent)
            SELECT gen_random_uuid(), c.id, s.status,
                   CASE WHEN s.status = 'open' OR c.n %% 3 <> 0 THEN NULL
                        ELSE (%s::int[])[1 + c.n %% 3] END,
                   c.created_at, c.created_at + %s * interval '1 min',
                   c.created_at + %s * interval '1 min', c.created_at + %s * interval '1 min',
                   CASE WHEN s.status = 'pending' THEN 'customer_request' ELSE '' END, '',
                   CASE WHEN s.status = 'resolved' AND c.n %% 4 = 0 THEN 1 + (c.n / 4) %% 5 END, '',
                   '', (ARRAY['en', 'de-CH', 'fr'])[1 + c.n %% 3], '', '', '', ''
            FROM (SELECT id, created_at, row_number() OVER (ORDER BY created_at DESC) AS n
                  FROM conversations_customer) c,
            LATERAL (SELECT CASE WHEN c.n %% 20 = 0 THEN 'pending'
                                 WHEN c.n %% 20 IN (1, 2, 3, 4) THEN 'open'
                                 WHEN c.n %% 20 = 5 THEN 'snoozed'
                                 ELSE 'resolved' END AS status) s
            """,
            [agents, per, per, per],
        )
        cursor.execute(
            f"""
            INSERT INTO conversations_turn
                (conversation_id, author, text, created_at, status, attempt, provider, model,
                 sources, abstained, error_code)
            SELECT c.id,
                   CASE WHEN k %% 2 = 1 OR (c.status = 'pending' AND k = %s) THEN 'customer'
                        ELSE 'bot' END,
                   (SELECT string_agg(({words})[1 + floor(power(random(), 3) * {len(WORDS)})::int
                                      + 0 * w + 0 * k], ' ')
                    FROM generate_series(1, 8) w),
                   c.created_at + k * interval '1 min',
                   CASE WHEN k %% 2 = 0 THEN 'done' ELSE '' END, 0, '', '', '[]', false, ''
            FROM conversations_conversation c, generate_series(1, %s) k
            """,  # noqa: S608 (the f-string inserts only the constant WORDS)
            [per, per],
        )
        cursor.execute(
            "UPDATE conversations_turn SET text = text || ' ' || %s WHERE id %% 200000 = 7",
            [RARE],
        )
        cursor.execute(
            """
            INSERT INTO inbox_conversationlabel (conversation_id, label_id, added_at)
            SELECT id, (%s::int[])[1 + abs(hashtext(id::text)) %% 4], now()
            FROM conversations_conversation WHERE abs(hashtext(id::text)) %% 10 = 0
            """,
            [labels],
        )
        for statement in search.PG_SEARCH:
            cursor.execute(statement)
        cursor.execute("ALTER TABLE conversations_turn ENABLE TRIGGER inbox_waiting_turn")
        cursor.execute(search.BACKFILL)
        cursor.execute("ANALYZE")
        cursor.execute("SELECT count(*) FROM conversations_turn")
        (turn_count,) = cursor.fetchone()
    return {"agents": agents, "labels": labels, "turns": turn_count}


def measure(client, params: dict[str, str], requests: int) -> tuple[float, float, int]:
    def once() -> tuple[float, int]:
        started = time.perf_counter()
        response = client.get("/agent/api/inbox/", params)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(f"{params}: {response.status_code} {response.content[:300]!r}")
        return elapsed, len(response.json()["rows"])

    for _ in range(3):  # warm: connection, session, plans
        once()
    timings, rows = [], 0
    for _ in range(requests):
        elapsed, rows = once()
        timings.append(elapsed)
    timings.sort()
    p95 = timings[min(len(timings) - 1, round(0.95 * (len(timings) - 1)))]
    return statistics.median(timings), p95, rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.measure_only:
        recreate_database(args.server, args.database)
    from bench.standalone import setup

    setup(DATABASE_URL=f"{args.server}/{args.database}", DATABASE_POOL_SIZE="0")
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    try:
        started = time.perf_counter()
        if args.measure_only:
            from inbox.models import Label

            call_command("migrate", verbosity=0)  # the code may be newer than the seed
            seeded = {
                "agents": [User.objects.get(username="bench_agent_0").pk],
                "labels": [Label.objects.get(name="Billing").pk],
            }
            print(f"Measuring {args.database} as a --keep run left it.")
        else:
            call_command("migrate", verbosity=0)
            seeded = seed(args.conversations, args.turns)
            seconds = time.perf_counter() - started
            print(
                f"Seeded {args.conversations:,} conversations and {seeded['turns']:,} turns "
                f"into {args.database} in {seconds:.0f} s (migrate, insert, indexes, ANALYZE)."
            )
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(User.objects.get(pk=seeded["agents"][0]))
        label = str(seeded["labels"][0])
        first = client.get("/agent/api/inbox/").json()
        scenarios = [
            ("first page (All, default order)", {}),
            ("second page (cursor)", {"cursor": first["next_cursor"] or ""}),
            ("Mine", {"view": "mine"}),
            ("Unassigned + label", {"view": "unassigned", "label": label}),
            ("resolved, rated 3", {"status": "resolved", "rating": "3"}),
            ("search: common word", {"q": "parcel"}),
            ("search: two words, any status", {"q": "refund invoice", "status": "all"}),
            ("search: rare word", {"q": RARE, "status": "all"}),
            ("search: customer email", {"q": "customer4242@example.com", "status": "all"}),
            ("search: external id", {"q": "user-5000", "status": "all"}),
        ]
        width = max(len(name) for name, _ in scenarios)
        print(f"\n{'scenario':<{width}}  {'p50 ms':>8}  {'p95 ms':>8}  {'rows':>5}  ≤300 ms p95")
        print("-" * (width + 38))
        for name, params in scenarios:
            p50, p95, rows = measure(client, {k: v for k, v in params.items() if v}, args.requests)
            verdict = "yes" if p95 <= TARGET_MS else "NO"
            print(f"{name:<{width}}  {p50:>8.1f}  {p95:>8.1f}  {rows:>5}  {verdict}")
        print(
            f"\n{args.requests} timed requests per scenario (after 3 warm-up), Django test Client."
        )
    finally:
        from django.db import connections

        connections.close_all()
        if not (args.keep or args.measure_only):
            recreate_database(args.server, args.database, drop_only=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
