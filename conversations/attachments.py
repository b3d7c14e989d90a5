"""Files customers and agents attach to their messages: checked from their content, stored
through Django's default storage, and shown only to the conversation's customer and the team.

Specification: docs/attachments.md. The services (services.post_customer_message, the inbox's
agent_reply) validate first (`validate`: nothing is stored for a refused file), then store the
files with their turn in one transaction (`store`), and remove them again if it fails
(`discard`).
"""

from __future__ import annotations

import io
import re
import unicodedata
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db.models.signals import post_delete
from django.dispatch import receiver
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import CustomerRequestRefused
from .models import Attachment, Turn

# What may be attached, told by the file's first bytes (never its name or the browser's word):
# content type -> (Pillow's format name or None for PDF, the extensions its name may keep).
ALLOWED: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "image/png": ("PNG", (".png",)),
    "image/jpeg": ("JPEG", (".jpg", ".jpeg")),
    "image/gif": ("GIF", (".gif",)),
    "image/webp": ("WEBP", (".webp",)),
    "application/pdf": (None, (".pdf",)),
}
THUMBNAIL_SIZE = (320, 320)
#: Who on the team may open a conversation's files: those who work the inbox or read
#: transcripts in the admin.
STAFF_PERMISSIONS = ("conversations.work_inbox", "conversations.view_conversation")
_NAME_LIMIT = 120
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f"\\/:*?<>|;]+')


class AttachmentRefused(CustomerRequestRefused):
    """A file refused: `code` for programs, the message for people (HTTP 400, or 413 when too
    large)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(code, message)
        self.status = status


@dataclass(frozen=True)
class CheckedFile:
    """An upload that passed every check, ready to store."""

    upload: UploadedFile[Any]
    name: str
    content_type: str
    size: int
    width: int | None = None
    height: int | None = None
    thumbnail: bytes | None = None


def _limit_text(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MB" if size >= 1024 * 1024 else f"{size // 1024} KB"


def validate(files: Sequence[UploadedFile[Any]]) -> list[CheckedFile]:
    """Check every file (count, size, type from the content, images decoded); raises
    AttachmentRefused for the first one that fails, before anything is stored."""
    if len(files) > settings.ATTACHMENT_MAX_FILES:
        raise AttachmentRefused(
            "too_many_files",
            f"You can attach at most {settings.ATTACHMENT_MAX_FILES} files to one message.",
        )
    return [_check(upload) for upload in files]


def _check(upload: UploadedFile[Any]) -> CheckedFile:
    shown = safe_name(upload.name or "", "")
    size = upload.size or 0
    if size > settings.ATTACHMENT_MAX_BYTES:
        raise AttachmentRefused(
            "file_too_large",
            f"{shown or 'That file'} is too large: the limit is "
            f"{_limit_text(settings.ATTACHMENT_MAX_BYTES)}.",
            status=413,
        )
    if size == 0:
        raise AttachmentRefused("empty_file", f"{shown or 'That file'} is empty.")
    upload.seek(0)
    content_type = sniff(upload.read(16))
    upload.seek(0)
    if content_type is None:
        raise AttachmentRefused(
            "unsupported_type",
            f"{shown or 'That file'} can't be attached: only images (PNG, JPEG, GIF, WebP) "
            "and PDF documents can.",
        )
    name = safe_name(upload.name or "", content_type)
    if content_type == "application/pdf":
        return CheckedFile(upload=upload, name=name, content_type=content_type, size=size)
    width, height, thumbnail = _check_image(upload, content_type, name)
    return CheckedFile(
        upload=upload,
        name=name,
        content_type=content_type,
        size=size,
        width=width,
        height=height,
        thumbnail=thumbnail,
    )


def sniff(head: bytes) -> str | None:
    """The allowed type these first bytes begin, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    return None


def _check_image(upload: UploadedFile[Any], content_type: str, name: str) -> tuple[int, int, bytes]:
    """Decode the image (its header first: a decompression bomb is refused by its declared
    size before any pixel is decoded) and make its thumbnail."""
    damaged = AttachmentRefused("damaged_image", f"{name} is damaged or not really an image.")
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb guard warns, then raises, far above our limit: ours decides.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(upload) as image:
                if image.format != ALLOWED[content_type][0]:
                    raise damaged
                width, height = image.size
                if width * height > settings.ATTACHMENT_MAX_PIXELS:
                    raise AttachmentRefused(
                        "image_too_large",
                        f"{name} is {width}×{height} pixels: images may have at most "
                        f"{settings.ATTACHMENT_MAX_PIXELS:,} pixels.",
                        status=413,
                    )
                image.load()
                thumbnail = _thumbnail(image)
    except AttachmentRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise AttachmentRefused(
            "image_too_large", f"{name} is too large once decoded.", status=413
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise damaged from None
    finally:
        upload.seek(0)
    return width, height, thumbnail


def _thumbnail(image: Image.Image) -> bytes:
    """A small copy (first frame, turned upright as the camera meant it): PNG when it has
    transparency, else JPEG."""
    small = ImageOps.exif_transpose(image.copy())
    small.thumbnail(THUMBNAIL_SIZE)
    keeps_alpha = small.mode in ("RGBA", "LA", "PA") or "transparency" in small.info
    small = small.convert("RGBA" if keeps_alpha else "RGB")
    out = io.BytesIO()
    small.save(out, format="PNG" if keeps_alpha else "JPEG", quality=85)
    return out.getvalue()


def thumbnail_type(attachment: Attachment) -> str:
    return "image/png" if (attachment.thumbnail.name or "").endswith(".png") else "image/jpeg"


def safe_name(name: str, content_type: str) -> str:
    """The file's name as shown and offered for download: its last path part, no control or
    path characters, at most _NAME_LIMIT characters, with an extension that matches its type
    (a PNG called "report.pdf" becomes "report.pdf.png")."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("_", name).strip(" ._") or "attachment"
    if content_type:
        extensions = ALLOWED[content_type][1]
        if PurePosixPath(name).suffix.lower() not in extensions:
            name = f"{name}{extensions[0]}"
    if len(name) > _NAME_LIMIT:
        suffix = PurePosixPath(name).suffix[:10]
        name = name[: _NAME_LIMIT - len(suffix)] + suffix
    return name


def store(turn: Turn, files: Iterable[CheckedFile], saved: list[str]) -> list[Attachment]:
    """Store checked files with their turn (inside the caller's transaction). Each stored
    file's name is appended to `saved`, for `discard` should the transaction fail."""
    stored = []
    for checked in files:
        attachment = Attachment(
            turn=turn,
            name=checked.name,
            content_type=checked.content_type,
            size=checked.size,
            width=checked.width,
            height=checked.height,
        )
        extension = ALLOWED[checked.content_type][1][0]
        attachment.file.save(f"upload{extension}", checked.upload, save=False)
        saved.append(str(attachment.file.name))
        if checked.thumbnail is not None:
            kind = ".png" if checked.thumbnail.startswith(b"\x89PNG") else ".jpg"
            attachment.thumbnail.save(f"thumb{kind}", ContentFile(checked.thumbnail), save=False)
            saved.append(str(attachment.thumbnail.name))
        attachment.save()
        stored.append(attachment)
    turn.stored_attachments = stored  # its event needs no query to list them (Turn.attached_files)
    return stored


def discard(names: Iterable[str]) -> None:
    """Remove stored files whose rows were never committed."""
    for name in names:
        default_storage.delete(name)


@receiver(post_delete, sender=Attachment, dispatch_uid="conversations.attachment_files")
def _delete_files(sender: type[Attachment], instance: Attachment, **kwargs: Any) -> None:
    # A deleted turn or conversation takes its files with it (CASCADE sends this per row).
    discard(name for name in (instance.file.name, instance.thumbnail.name) if name)


# --- Who may open a file ----------------------------------------------------------------------


def viewable(attachment_id: str, customer_id: uuid.UUID | None, user: Any) -> Attachment | None:
    """The attachment, if this visitor is its conversation's customer or this user is on the
    team with a permission to read conversations; None otherwise (the caller answers 404,
    the same as for an id that doesn't exist)."""
    try:
        pk = uuid.UUID(str(attachment_id))
    except ValueError:
        return None
    attachment = Attachment.objects.select_related("turn__conversation").filter(pk=pk).first()
    if attachment is None:
        return None
    if customer_id is not None and attachment.turn.conversation.customer_id == customer_id:
        return attachment
    staff = user is not None and user.is_authenticated and user.is_active
    if staff and any(user.has_perm(permission) for permission in STAFF_PERMISSIONS):
        return attachment
    return None
