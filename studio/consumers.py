"""The operators' websocket /ws/studio/: playground replies and evaluation progress. Thin.

Staff session auth (AuthMiddlewareStack on this route only), like /ws/inbox/: close 4401
without a logged-in user, 4403 without studio.use_playground or studio.run_evaluation.

Client → server:
  {"type":"playground","version_id":12,"message":"…","conversation_id":"<uuid>"|null}
      (studio.use_playground) → {"type":"playground.accepted","request_id":…}, then the
      request's frames (studio/playground.py)
  {"type":"watch_run","run_id":7}  (studio.run_evaluation) → "run.progress" frames
  {"type":"ping"} → {"type":"pong"}
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from conversations.protocol import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED, FrameError
from conversations.sockets import FrameConsumer, FrameHandler

from . import evaluation, playground
from .models import EvalRun
from .tasks import playground_reply

USE_PLAYGROUND = "studio.use_playground"
RUN_EVALUATION = "studio.run_evaluation"
# Playground requests one socket may have under way at once.
MAX_OPEN_REQUESTS = 3


def _perms(user: Any) -> set[str]:
    return {p for p in (USE_PLAYGROUND, RUN_EVALUATION) if user.has_perm(p)}


def _progress(run_id: int) -> dict[str, Any] | None:
    run = EvalRun.objects.filter(pk=run_id).first()
    return None if run is None else evaluation.progress_frame(run)


def _queue_playground(version_id: Any, conversation_id: Any, message: Any) -> tuple[Any, ...]:
    return playground.validate(version_id, conversation_id, message)


def _enqueue(request_id: str, args: tuple[Any, ...]) -> None:
    playground_reply.delay(request_id, *args)


class StudioConsumer(FrameConsumer):
    socket_kind = "studio"
    user: Any = None
    perms: set[str]

    async def connect(self) -> None:
        self.perms = set()
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self._refuse(CLOSE_UNAUTHENTICATED, "unauthenticated", "Please log in as staff.")
            return
        perms = await database_sync_to_async(_perms)(user)
        if not perms:
            await self._refuse(
                CLOSE_FORBIDDEN, "forbidden", "You don't have permission to use the prompt studio."
            )
            return
        self.user = user
        self.perms = perms
        await self._send({"type": "hello", "permissions": sorted(perms)})

    def accepts_frames(self) -> bool:
        return self.user is not None

    def frame_handlers(self) -> dict[str, FrameHandler]:
        return {
            "playground": self._on_playground,
            "watch_run": self._on_watch_run,
            "ping": self._on_ping,
        }

    def _require(self, permission: str) -> None:
        if permission not in self.perms:
            raise FrameError("forbidden", "You don't have permission to do that.")

    async def _on_playground(self, frame: dict[str, Any]) -> None:
        self._require(USE_PLAYGROUND)
        open_requests = [g for g in self.groups_joined if g.startswith("studio.playground.")]
        if len(open_requests) >= MAX_OPEN_REQUESTS:
            await self._leave(open_requests[0])
        args = await database_sync_to_async(_queue_playground)(
            frame.get("version_id"), frame.get("conversation_id"), frame.get("message", "")
        )
        request_id = playground.new_request_id()
        # Join before queueing: the first frame cannot arrive before we listen.
        await self._join(playground.request_group(request_id))
        await database_sync_to_async(_enqueue)(request_id, args)
        # The request's frames wait until this handler returns: "accepted" comes first.
        await self._send({"type": "playground.accepted", "request_id": request_id})

    async def _on_watch_run(self, frame: dict[str, Any]) -> None:
        self._require(RUN_EVALUATION)
        run_id = frame.get("run_id")
        if type(run_id) is not int:
            raise FrameError("bad_frame", "watch_run needs run_id (a number).")
        await self._join(evaluation.run_group(run_id))
        progress = await database_sync_to_async(_progress)(run_id)
        if progress is None:
            await self._leave(evaluation.run_group(run_id))
            raise FrameError("unknown_run", "There is no such evaluation run.")
        await self._send(progress)
