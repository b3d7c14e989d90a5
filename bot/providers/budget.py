"""The model account's budget: requests and tokens a minute, shared by every process through
Redis, so that a burst waits for its turn instead of drawing 429s.

Providers meter an account per model and minute (OpenAI: requests and tokens a minute, a
request's tokens counted up front as its prompt plus max_tokens). The limits come from the
environment (OPENAI_REQUESTS_PER_MIN, OPENAI_TOKENS_PER_MIN) or from the prompt version that
names the provider; 0 means no limit. One budget per provider, base URL, API key (hashed: the
key itself never reaches Redis) and model, because that is what the provider counts.

How: the generic cell rate algorithm (GCRA, as in ATM networks and redis-cell) for each of the
two limits, with bookings. One Lua script, atomic in Redis, gives a request the next moment both
limits allow and books it, and each request sleeps until its turn. Polling instead ("may I go
now?") lets whoever asks at the right moment go first and starves early arrivals. Requests
waiting for a turn queue by when their customer asked (BudgetWait.asked_at), so the first to
ask goes first even when their prompt was ready last. A reply holds its customer's place in
line from the moment the message is stored (BudgetedProvider.hold_place; a worker renews it
when it takes the reply, Provider.in_line), and a request books only once
nobody asked before it is still being prepared, so a burst's earliest questions are not
overtaken by later ones whose retrieval finished first, even while the budget has turns to give
at once. Requests ready meanwhile stay in line: the first to find the way clear books for every
one asked before it, in the order asked, so the turns free at once do not go to whichever asks
again first.

The bucket holds a minute's budget, as the provider's own does (its x-ratelimit-reset-* headers
count the time until it is full again): a burst of up to a minute's requests goes at once, then
one every 60/limit seconds. It keeps LATENCY_ALLOWANCE_S in hand, since a request reaches the
provider a little after its turn.

A 429 all the same (someone else uses the key, the provider counts differently) pushes the
budget back for every process: nobody starts before its Retry-After, and requests already
waiting wait that much longer, in the same order.

Not the `limits` package: its Redis strategies test and take (`hit`) but cannot book a later
turn, so waiting callers would have to poll, which is not FIFO; and it has no push-back.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings
from redis.commands.core import Script
from redis.exceptions import RedisError

from bot.types import (
    BudgetWait,
    Finished,
    ModelLimits,
    PlaceInLine,
    ProviderError,
    ReplyRequest,
    StreamEvent,
    estimate_tokens,
)
from support_bot import metrics
from support_bot.redis_clients import key, sync_client

from .base import Provider, close_stream

logger = logging.getLogger(__name__)

# Of the minute the bucket holds, this much is kept in hand: a request reaches the provider a
# little after its turn (a thread waking, a connection, a busy CPU), and the provider's count,
# which starts at the arrival, must never run ahead of ours.
LATENCY_ALLOWANCE_S = 1.0
# How often a waiting request looks for a push-back, and whether its reply was taken over.
WAIT_STEP_S = 0.5
# A wait about to end is not announced: the line would flash and go.
MIN_NOTICE_S = 1.0
# A place in line not used to book within this long is given up (its worker died, or its
# retrieval is stuck): those behind it stop waiting for it.
PLACE_HELD_S = 15.0
# How often a request behind customers still being prepared looks again.
BEHIND_STEP_S = 0.05
# A 429 without Retry-After pauses the budget this long.
DEFAULT_PUSH_BACK_S = 1.0
# A budget's state outlives its last booking by this long, then Redis forgets it (a full bucket).
STATE_TTL_S = 3600

# State of one budget, times in Redis's clock (seconds). A hash: `req` and `tok` are the
# theoretical arrival times of the two GCRAs, `last` the latest turn booked (new turns never
# come before it), `toklast` the latest turn of a request's tokens (token turns go in the
# order they were booked), `blocked` the end of the latest push-back, `shift` the seconds
# push-backs added to turns already booked (a request waiting for its token turn reads it).
# Two sorted sets hold the request turns not yet come: `slots` (the turns, by time) and `queue`
# (their bookings, by when their customer asked); the n-th booking in `queue` has the n-th
# slot, so a customer who asked first goes first even if their prompt was ready last
# (retrieval under a burst finishes in any order). A waiting request reads its turn again at
# every wait step. The places in line: `preparing` (requests still being prepared) and `ready`
# (prepared, waiting for one asked before them) by when their customer asked, `held` by when
# a place is given up; `wants` (a hash) what each ready request books, and `booked` the
# bookings made for them by one asked after them that found the way clear.
_TIME_AND_PURGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
-- Turns that came leave both sets: the earliest slot goes with the earliest-asked booking.
while true do
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  if #first == 0 or tonumber(first[2]) > now then break end
  redis.call('ZPOPMIN', KEYS[3])
  redis.call('ZPOPMIN', KEYS[2])
end
"""

_BOOK = (
    _TIME_AND_PURGE
    + """
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local tolerance, ttl = 60 - tonumber(ARGV[5]), tonumber(ARGV[6])

-- One booking: {1, seconds to its turn, shift, seconds to its token turn}, or {0, seconds to the
-- first turn possible, shift, 0} when that is past `longest` (nothing is booked then).
local function book(tokens, longest, asked, id)
  local s = redis.call('HMGET', KEYS[1], 'req', 'tok', 'last', 'blocked', 'shift', 'toklast')
  local req, tok = tonumber(s[1]) or now, tonumber(s[2]) or now
  local blocked = tonumber(s[4]) or now
  -- `turn`: the new end of the schedule. `tok_turn`: the turn of this request's tokens, never
  -- before the token turn of one booked earlier (sent before it, this request would take
  -- tokens that one counted on).
  local turn = math.max(now, tonumber(s[3]) or now, blocked)
  local tok_turn, tok_last = now, tonumber(s[6]) or now
  local req_step, tok_step = 0, 0
  if rpm > 0 then
    req_step = math.min(60 / rpm, tolerance)
    turn = math.max(turn, req + req_step - tolerance)
  end
  if tpm > 0 then
    tok_step = math.min(60 * tokens / tpm, tolerance)
    tok_turn = math.max(now, blocked, tok_last, tok + tok_step - tolerance)
    turn = math.max(turn, tok_turn)
  end
  local shift = s[5] or '0'
  if turn - now > longest then
    return {0, turn - now, shift, 0}
  end
  if rpm > 0 then req = math.max(req, turn) + req_step end
  if tpm > 0 then tok = math.max(tok, turn) + tok_step end
  redis.call('HSET', KEYS[1], 'req', string.format('%.6f', req),
    'tok', string.format('%.6f', tok), 'last', string.format('%.6f', turn),
    'toklast', string.format('%.6f', math.max(tok_last, tok_turn)))
  local expiry = math.ceil(math.max(req, tok, turn) - now) + ttl
  redis.call('EXPIRE', KEYS[1], expiry)
  local wait = turn
  if rpm > 0 and turn > now then
    -- The new turn joins the slots; the booking takes its place among those waiting by when
    -- its customer asked, and the slot of that rank (those after it move one slot on). A turn
    -- that is now goes at once: nobody is waiting then (every slot booked has come).
    redis.call('ZADD', KEYS[3], string.format('%.6f', turn), id)
    redis.call('ZADD', KEYS[2], string.format('%.6f', asked), id)
    redis.call('EXPIRE', KEYS[2], expiry)
    redis.call('EXPIRE', KEYS[3], expiry)
    local rank = redis.call('ZRANK', KEYS[2], id)
    local slot = redis.call('ZRANGE', KEYS[3], rank, rank, 'WITHSCORES')
    wait = math.max(tonumber(slot[2]), tok_turn)
  end
  return {1, wait - now, shift, tok_turn - now}
end

local function reply(r)
  return {r[1], string.format('%.6f', r[2]), r[3], string.format('%.6f', r[4])}
end

local function forget(place)
  for i = 4, 6 do redis.call('ZREM', KEYS[i], place) end
  redis.call('HDEL', KEYS[7], place)
end

local tokens, longest = tonumber(ARGV[3]), tonumber(ARGV[4])
local asked, id, place = tonumber(ARGV[7]) or now, ARGV[8], ARGV[9]
if place == '' then return reply(book(tokens, longest, asked, id)) end
-- Scores as text: a Lua number becomes text with 14 digits, a tenth of a millisecond here.
local asked_text = string.format('%.6f', asked)

-- A request with a place in line: prepared, so nobody waits for it to be prepared any more.
-- Places not used in time are given up (their worker died, or their retrieval is stuck).
redis.call('ZREM', KEYS[4], place)
local gone = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now)
for i = 1, #gone do
  forget(gone[i])
  redis.call('HDEL', KEYS[8], gone[i])
end
-- Booked already, by a request asked after it that found the way clear (below).
local done = redis.call('HGET', KEYS[8], place)
if done then
  redis.call('HDEL', KEYS[8], place)
  local code, turn, shift, tok_turn = string.match(done, '(%S+) (%S+) (%S+) (%S+)')
  return reply({tonumber(code), tonumber(turn) - now, shift, tonumber(tok_turn) - now})
end
local keep = math.ceil(tonumber(ARGV[10])) + 60
local earliest = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if #earliest > 0 and tonumber(earliest[2]) < asked then
  -- Someone asked before it is still being prepared: it waits, ready (the caller asks again
  -- shortly, and its place is held on while it does).
  redis.call('ZADD', KEYS[6], asked_text, place)
  redis.call('HSET', KEYS[7], place,
    string.format('%d %.6f %.6f %s', tokens, now + longest, asked, id))
  redis.call('ZADD', KEYS[5], string.format('%.6f', now + tonumber(ARGV[10])), place)
  for i = 5, 7 do redis.call('EXPIRE', KEYS[i], keep) end
  return {2, '0', '0', '0'}
end
-- The way is clear: first those ready who asked before it, in the order they asked (else
-- whichever of them asked again first would take the turns free now), then itself.
local before = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', '(' .. asked_text)
for i = 1, #before do
  local other = before[i]
  local wants = redis.call('HGET', KEYS[7], other)
  forget(other)
  if wants then
    local o_tokens, o_until, o_asked, o_id = string.match(wants, '(%S+) (%S+) (%S+) (%S+)')
    local r = book(tonumber(o_tokens), tonumber(o_until) - now, tonumber(o_asked), o_id)
    redis.call('HSET', KEYS[8], other,
      string.format('%d %.6f %s %.6f', r[1], now + r[2], r[3], now + r[4]))
    redis.call('EXPIRE', KEYS[8], keep)
  end
end
forget(place)
return reply(book(tokens, longest, asked, id))
"""
)

# A booking's request turn now: seconds to wait, or -1 once it has come (it left the queue).
_TURN = (
    _TIME_AND_PURGE
    + """
local rank = redis.call('ZRANK', KEYS[2], ARGV[1])
if not rank then return '-1' end
local slot = redis.call('ZRANGE', KEYS[3], rank, rank, 'WITHSCORES')
return string.format('%.6f', tonumber(slot[2]) - now)
"""
)

# A customer's place in line (KEYS: `preparing`, `held`; ARGV: asked, ticket, seconds held).
_HOLD_PLACE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local held = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], string.format('%.6f', now + held), ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(held) + 60)
redis.call('EXPIRE', KEYS[2], math.ceil(held) + 60)
"""

_PUSH_BACK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local seconds, rpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local tolerance, ttl = 60 - tonumber(ARGV[3]), tonumber(ARGV[4])
local s = redis.call('HMGET', KEYS[1], 'req', 'tok', 'last', 'blocked', 'shift')
local req, tok, last = tonumber(s[1]) or now, tonumber(s[2]) or now, tonumber(s[3]) or now
local blocked, shift = tonumber(s[4]) or now, tonumber(s[5]) or 0
local until_ = now + seconds
-- Only what no earlier push-back covers: several 429s at once pause the budget once.
local extra = until_ - math.max(blocked, now)
if extra <= 0 then return '0' end
if last > now then
  -- Requests are waiting for their turns: each waits `extra` longer, and so the schedule after
  -- them moves too (a new request still comes after them, a step on).
  shift = shift + extra
  last = last + extra
  req = req + extra
  tok = tok + extra
  local tok_last = tonumber(redis.call('HGET', KEYS[1], 'toklast'))
  if tok_last and tok_last > now then
    redis.call('HSET', KEYS[1], 'toklast', string.format('%.6f', tok_last + extra))
  end
  local waiting = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. now, '+inf', 'WITHSCORES')
  for i = 1, #waiting, 2 do
    redis.call('ZADD', KEYS[3], tonumber(waiting[i + 1]) + extra, waiting[i])
  end
end
if rpm > 0 then
  -- The provider says its bucket is empty: one request at until_, then one a step.
  local step = math.min(60 / rpm, tolerance)
  req = math.max(req, until_ + tolerance - step)
end
redis.call('HSET', KEYS[1], 'req', string.format('%.6f', req), 'tok', string.format('%.6f', tok),
  'last', string.format('%.6f', last), 'blocked', string.format('%.6f', until_),
  'shift', string.format('%.6f', shift))
redis.call('EXPIRE', KEYS[1], math.ceil(math.max(req, tok, last, until_) - now) + ttl)
return string.format('%.6f', extra)
"""

_CHARGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens, tpm, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tok = math.max(tonumber(redis.call('HGET', KEYS[1], 'tok')) or now, now) + 60 * tokens / tpm
redis.call('HSET', KEYS[1], 'tok', string.format('%.6f', tok))
redis.call('EXPIRE', KEYS[1], math.ceil(tok - now) + ttl)
return string.format('%.6f', tok - now)
"""


@dataclass(frozen=True)
class _Booking:
    id: str
    booked: bool  # False: no turn before the longest wait allowed (nothing was booked)
    behind: bool  # nothing booked yet: customers who asked before are still being prepared
    made_at: float  # time.monotonic() when it was asked for: the waits count from then
    wait: float  # seconds to the turn
    shift: float  # the budget's push-back total then
    token_wait: float  # seconds to the turn of its tokens alone


@dataclass(frozen=True)
class Limits:
    """The limits a request is held to, resolved: counts a minute, 0 for no limit."""

    requests_per_min: int
    tokens_per_min: int

    @property
    def limited(self) -> bool:
        return self.requests_per_min > 0 or self.tokens_per_min > 0

    def __str__(self) -> str:
        parts = []
        if self.requests_per_min:
            parts.append(f"{self.requests_per_min} requests/min")
        if self.tokens_per_min:
            parts.append(f"{self.tokens_per_min} tokens/min")
        return ", ".join(parts) or "no limit"


def resolve(limits: ModelLimits) -> Limits:
    """A request's limits: its prompt version's where it sets them, else the environment's."""
    rpm = limits.requests_per_min
    tpm = limits.tokens_per_min
    return Limits(
        requests_per_min=max(0, settings.OPENAI_REQUESTS_PER_MIN if rpm is None else rpm),
        tokens_per_min=max(0, settings.OPENAI_TOKENS_PER_MIN if tpm is None else tpm),
    )


def request_tokens(request: ReplyRequest) -> int:
    """What the provider charges up front: the estimated prompt (with the few tokens each
    message's framing costs) plus max_tokens, which OpenAI's limiter counts whole."""
    prompt = sum(estimate_tokens(m.content) + 3 for m in request.messages) + 3
    return prompt + max(0, request.max_tokens)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ModelBudget:
    """The budgets of one provider account (base URL and API key), one per model."""

    def __init__(self, provider: str, *, base_url: str | None, api_key: str, model: str) -> None:
        self.provider = provider
        self.default_model = model
        self._account = f"{_digest(base_url or '')}:{_digest(api_key)}"

    def key_for(self, request: ReplyRequest) -> str:
        return self.key_for_model(request.model)

    def key_for_model(self, model: str) -> str:
        return key("model-budget", self.provider, self._account, model or self.default_model)

    # --- Booking and waiting ---------------------------------------------------------------------

    def wait_for_turn(self, request: ReplyRequest, limits: Limits, tokens: int) -> float:
        """Book the request's turn and sleep until it; the seconds waited. Raises
        ProviderError: `over_budget` when the turn comes after the caller's deadline (nothing is
        booked then), `cancelled` when the caller stops waiting. Redis unreachable: no wait,
        the request goes unmetered (a 429 is still retried by the reply writer)."""
        wait = request.budget_wait or BudgetWait()
        started = time.monotonic()
        deadline = (
            wait.deadline
            if wait.deadline is not None
            else started + float(settings.REPLY_DEADLINE_S)
        )
        budget = self.key_for(request)
        try:
            booking = self._book_in_turn(request, limits, tokens, wait, deadline)
        except RedisError as exc:
            logger.warning("the model's budget is not metered: Redis is unreachable (%s)", exc)
            metrics.model_budget_event("unavailable")
            return 0.0
        if not booking.booked:
            raise self._refused(limits, booking.wait)
        # The request turn is read again at each step (an earlier-asked booking may take its
        # slot, a push-back moves it); the token turn moves only with push-backs.
        request_due = booking.made_at + booking.wait
        token_due = booking.made_at + booking.token_wait
        shift = booking.shift
        on_notice = wait.on_notice
        notice_at = wait.notice_at if on_notice is not None else None
        first = True
        while True:
            if not first:  # the turn just booked is fresh
                if limits.requests_per_min:
                    request_due = self._request_turn(budget, booking.id, request_due)
                shift = self._shift(budget, shift)
            first = False
            now = time.monotonic()
            turn = max(request_due, token_due + max(0.0, shift - booking.shift))
            if now >= turn:
                break
            if wait.cancelled is not None and wait.cancelled():
                raise ProviderError(
                    "stopped waiting for the model's budget", permanent=True, code="cancelled"
                )
            if turn > deadline:
                raise self._refused(limits, turn - now)
            if on_notice is not None and notice_at is not None and now >= notice_at:
                if turn - now >= MIN_NOTICE_S:
                    on_notice(turn - now)
                notice_at = None  # told once, or not at all
            nap = min(WAIT_STEP_S, turn - now)
            if notice_at is not None:
                nap = min(nap, max(0.0, notice_at - now))
            time.sleep(nap)
        waited = time.monotonic() - started
        metrics.model_budget_waited(waited)
        if waited >= 1:
            logger.info("waited %.1fs for a turn in the model's budget (%s)", waited, limits)
        return waited

    def _book_in_turn(
        self, request: ReplyRequest, limits: Limits, tokens: int, wait: BudgetWait, deadline: float
    ) -> _Booking:
        """Book once nobody who asked before this request is still being prepared (or be
        booked, in the order asked, by a request asked after it that found the way clear)."""
        booking_id = uuid.uuid4().hex
        while True:
            booking = self._book(
                request,
                limits,
                tokens,
                deadline - time.monotonic(),
                wait.asked_at,
                wait.place,
                booking_id,
            )
            if not booking.behind:
                return booking
            if wait.cancelled is not None and wait.cancelled():
                raise ProviderError(
                    "stopped waiting for the model's budget", permanent=True, code="cancelled"
                )
            if time.monotonic() >= deadline:
                metrics.model_budget_event("refused")
                raise ProviderError(
                    "Customers who asked before were still being prepared at the deadline",
                    permanent=True,
                    code="over_budget",
                )
            time.sleep(BEHIND_STEP_S)

    def hold_place(self, place: PlaceInLine) -> None:
        """Take or renew a customer's place in line: until it is ready to book, requests asked
        after it wait for it (at most PLACE_HELD_S from now). Taken when the message is stored
        and renewed when a worker starts on it. Redis unreachable: no place is held, and
        nobody waits for it."""
        try:
            _script(_HOLD_PLACE)(
                keys=self._keys(self.key_for_model(place.model))[3:5],
                args=[f"{place.asked_at:.6f}", place.ticket, PLACE_HELD_S],
            )
        except RedisError as exc:
            logger.warning("no place in line for the model's budget: Redis is unreachable (%s)",
                           exc)  # fmt: skip

    def leave_line(self, place: PlaceInLine) -> None:
        # Gone already if it booked; not if the reply needed no model or failed first.
        keys = self._keys(self.key_for_model(place.model))
        with contextlib.suppress(RedisError):
            pipe = sync_client().pipeline(transaction=False)
            for line in keys[3:6]:
                pipe.zrem(line, place.ticket)
            pipe.hdel(keys[6], place.ticket)
            pipe.hdel(keys[7], place.ticket)
            pipe.execute()

    def admit_now(self, request: ReplyRequest) -> bool:
        """Book a turn only if it is now (a hedge: one that would have to wait is no use)."""
        limits = resolve(request.limits)
        if not limits.limited:
            return True
        try:
            return self._book(request, limits, request_tokens(request), 0.0, None).booked
        except RedisError:
            return True  # unmetered, as in wait_for_turn

    def push_back(self, request: ReplyRequest, limits: Limits, seconds: float) -> None:
        """The provider answered 429: nobody starts before `seconds` from now, and requests
        already waiting wait that much longer."""
        try:
            extra = float(
                _script(_PUSH_BACK)(
                    keys=self._keys(self.key_for(request)),
                    args=[seconds, limits.requests_per_min, LATENCY_ALLOWANCE_S, STATE_TTL_S],
                )
            )
        except RedisError as exc:
            logger.warning("the model's budget could not be pushed back (%s)", exc)
            return
        if extra > 0:
            metrics.model_budget_event("pushed_back")
            logger.warning("the model answered 429: its budget paused for %.1fs", extra)

    def charge(self, request: ReplyRequest, limits: Limits, tokens: int) -> None:
        """Tokens the request used beyond what it was charged up front (a prompt longer in
        tokens than estimated)."""
        if tokens <= 0 or not limits.tokens_per_min:
            return
        try:
            _script(_CHARGE)(
                keys=[self.key_for(request)],
                args=[tokens, limits.tokens_per_min, STATE_TTL_S],
            )
        except RedisError as exc:
            logger.warning("the model's budget could not be charged (%s)", exc)

    # --- Redis -----------------------------------------------------------------------------------

    @staticmethod
    def _keys(budget: str) -> list[str]:
        parts = ("queue", "slots", "preparing", "held", "ready", "wants", "booked")
        return [budget, *(f"{budget}:{part}" for part in parts)]

    def _book(
        self,
        request: ReplyRequest,
        limits: Limits,
        tokens: int,
        longest: float,
        asked_at: float | None,
        place: str | None = None,
        booking_id: str | None = None,
    ) -> _Booking:
        if limits.tokens_per_min and tokens > limits.tokens_per_min:
            # More than a minute's budget: the provider will refuse it, but it must not wait
            # for ever first.
            logger.warning(
                "a request of about %d tokens exceeds the %d tokens/min budget",
                tokens,
                limits.tokens_per_min,
            )
            tokens = limits.tokens_per_min
        booking_id = booking_id or uuid.uuid4().hex
        made_at = time.monotonic()
        booked, seconds, shift, token_seconds = _script(_BOOK)(
            keys=self._keys(self.key_for(request)),
            args=[
                limits.requests_per_min,
                limits.tokens_per_min,
                max(1, tokens),
                max(0.0, longest),
                LATENCY_ALLOWANCE_S,
                STATE_TTL_S,
                "" if asked_at is None else f"{asked_at:.6f}",
                booking_id,
                place or "",
                PLACE_HELD_S,
            ],
        )
        return _Booking(
            id=booking_id,
            booked=int(booked) == 1,
            behind=int(booked) == 2,
            made_at=made_at,
            wait=max(0.0, float(seconds)),
            shift=float(shift),
            token_wait=max(0.0, float(token_seconds)),
        )

    def _request_turn(self, budget: str, booking_id: str, known: float) -> float:
        """When a booking's request turn comes (time.monotonic()), as Redis has it now."""
        try:
            seconds = float(_script(_TURN)(keys=self._keys(budget), args=[booking_id]))
        except RedisError:
            return known
        return 0.0 if seconds < 0 else time.monotonic() + seconds

    def _shift(self, budget: str, known: float) -> float:
        """The budget's push-back total now (what it was last known to be, when unreadable)."""
        try:
            now = sync_client().hget(budget, "shift")
        except RedisError:
            return known
        return known if now is None else max(known, float(now))

    def _refused(self, limits: Limits, seconds: float) -> ProviderError:
        metrics.model_budget_event("refused")
        return ProviderError(
            f"The model's budget ({limits}) has no turn for {seconds:.0f}s, past the deadline",
            permanent=True,
            code="over_budget",
        )


_registered: dict[tuple[int, str], Script] = {}


def _script(source: str) -> Script:
    """The script registered on this process's Redis client (EVALSHA, loaded on first use)."""
    client = sync_client()
    found = _registered.get((id(client), source))
    if found is None:
        found = client.register_script(source)
        _registered[(id(client), source)] = found
    return found


class BudgetedProvider(Provider):
    """A provider whose requests wait for their turn in the model's budget. It wraps the hedge
    (bot/providers/hedge.py), so the wait comes before the hedge's clock starts: a request
    waiting for the budget is not a silent model. A hedge takes a turn of its own, only one
    free at once (ModelBudget.admit_now); a retry is a new request and waits again."""

    def __init__(self, provider: Provider, budget: ModelBudget) -> None:
        self.provider = provider
        self.budget = budget
        self.stand_in_for(provider)

    def hold_place(self, place: PlaceInLine) -> None:
        if resolve(place.limits).limited:
            self.budget.hold_place(place)

    def leave_line(self, place: PlaceInLine) -> None:
        if resolve(place.limits).limited:
            self.budget.leave_line(place)

    def stream(self, request: ReplyRequest) -> Iterator[StreamEvent]:
        limits = resolve(request.limits)
        if not limits.limited:
            yield from self.provider.stream(request)
            return
        tokens = request_tokens(request)
        self.budget.wait_for_turn(request, limits, tokens)
        events = self.provider.stream(request)
        try:
            for event in events:
                if isinstance(event, Finished):
                    used = event.prompt_tokens + event.completion_tokens
                    self.budget.charge(request, limits, used - tokens)
                yield event
        except ProviderError as exc:
            if exc.code == "rate_limited":
                pause = exc.retry_after if exc.retry_after is not None else DEFAULT_PUSH_BACK_S
                self.budget.push_back(request, limits, pause)
            raise
        finally:
            close_stream(events)
