"""What every Support Bot websocket shares: JSON frames dispatched by their "type", refusals
answered as error frames, groups joined for the socket's life, and keep-alive.

Subclasses say which frames they take (`frame_handlers`) and whether they are ready for them
(`accepts_frames`, false until connect() has authorised the socket).
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from support_bot import metrics

from . import events, protocol
from .errors import Refused
from .models import Turn
from .protocol import FrameError

FrameHandler = Callable[[dict[str, Any]], Awaitable[None]]

# The pages' heartbeat, exactly as they send it: every open page sends one every few seconds
# (docs/protocol.md#heartbeat), so it is answered before any parsing.
PING_FRAME = '{"type":"ping"}'
PONG_FRAME = '{"type":"pong"}'


class FrameConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    # The customer chat closes the socket after an oversize frame (its documented protocol).
    close_on_too_large = False
    # What supportbot_open_sockets counts this socket as.
    socket_kind = "other"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.groups_joined: list[str] = []
        self.counted_open = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # Counted from accept to the consumer's end, however it ends (closed, or cancelled).
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.counted_open:
                metrics.socket_closed(self.socket_kind)

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        await super().accept(subprotocol, headers)
        metrics.socket_opened(self.socket_kind)
        self.counted_open = True

    def accepts_frames(self) -> bool:
        raise NotImplementedError

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels hops to a thread to close stale database connections before every handler:
        # ~0.2 ms of CPU each, more than the rest of forwarding a frame. The frames a socket
        # handles most (a reply's pieces, the page's heartbeat) touch no database, so they skip
        # the hop; everything else goes Channels' way (docs/performance.md).
        kind = message["type"]
        if kind == "frame.forward":
            await self.frame_forward(message)
        elif kind == "websocket.receive" and message.get("text") == PING_FRAME:
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    def frame_handlers(self) -> Mapping[str, FrameHandler]:
        raise NotImplementedError

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.accepts_frames():
            return
        if text_data == PING_FRAME:
            await self._on_ping({"type": "ping"})
            return
        try:
            frame = protocol.decode(text_data)
            handler = self.frame_handlers().get(frame["type"])
            if handler is None:
                raise FrameError("unknown_type", f"Unknown frame type {frame['type'][:40]!r}.")
            await handler(frame)
        except Refused as refused:
            await self._send(refused.as_frame())
            if self.close_on_too_large and refused.code == "frame_too_large":
                await self.close(code=protocol.CLOSE_TOO_LARGE)

    async def disconnect(self, code: int) -> None:
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def _join(self, group: str) -> None:
        if group not in self.groups_joined:
            await keep_listening(self.channel_layer)
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.append(group)

    async def _leave(self, group: str) -> None:
        if group in self.groups_joined:
            self.groups_joined.remove(group)
            await self.channel_layer.group_discard(group, self.channel_name)

    async def _replay(self, reply: Turn, after: int) -> None:
        """Resend a reply's frames with seq > after from its replay log. When the log has
        expired (or the client saw all but the end), the stored turn is the authority: its
        final frame, with a seq past anything the client has applied."""
        frames = await events.replay_after(reply.pk, after)
        for raw in frames:
            await self.send(text_data=raw)
        finished = reply.status in (Turn.Status.DONE, Turn.Status.FAILED, Turn.Status.WITHDRAWN)
        if finished and not any(events.is_frame(raw, "reply.done") for raw in frames):
            await self._send({**events.done_frame(reply), "seq": after + 1})

    async def _on_ping(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=PONG_FRAME)

    async def frame_forward(self, event: dict[str, Any]) -> None:
        """A frame for every socket in a group, already serialised by its sender."""
        await self.send(text_data=event["json"])

    async def _send(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(frame, separators=(",", ":")))

    async def _refuse(self, close_code: int, code: str, message: str) -> None:
        await self._send({"type": "error", "code": code, "message": message})
        await self.close(code=close_code)


# channels_redis's pubsub layer reads its Redis connection only while subscribed to something;
# with nothing subscribed it looks again every 0.1 s. So once a web process's last socket had
# closed, the next socket got its first frames up to 100 ms late (a reconnecting page's too).
# Each event loop's layer keeps one channel of its own subscribed for the loop's life.
_listening: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[str]] = (
    weakref.WeakKeyDictionary()
)


async def keep_listening(layer: Any) -> str:
    """Subscribe this event loop's channel layer to a channel nobody sends to, once (sockets
    connecting together share the one subscription); returns its name."""
    loop = asyncio.get_running_loop()
    subscribed = _listening.get(loop)
    if subscribed is None or (subscribed.done() and not _succeeded(subscribed)):
        # Again after a failure (Redis was down): the socket's own join fails the same way.
        subscribed = _listening[loop] = loop.create_task(layer.new_channel("listening."))
    # Shielded: a socket cancelled while connecting leaves the subscription to the others.
    return await asyncio.shield(subscribed)


def _succeeded(task: asyncio.Task[str]) -> bool:
    return not task.cancelled() and task.exception() is None
