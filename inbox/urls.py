from django.urls import path

from . import context_views, views

app_name = "inbox"

api = "api/conversations/<uuid:conversation_id>"

urlpatterns = [
    path("", views.inbox_page, name="inbox"),
    path("conversations/<uuid:conversation_id>/", views.conversation_page, name="conversation"),
    path("api/inbox/", views.inbox_rows, name="api-inbox"),
    path("api/canned/", views.canned_responses, name="api-canned"),
    path("api/labels/", views.labels, name="api-labels"),
    path(f"{api}/labels/", views.conversation_labels, name="labels"),
    path("api/away/", views.set_away, name="api-away"),
    path("api/notifications/", views.notifications, name="api-notifications"),
    path(f"{api}/take-over/", views.take_over, name="take-over"),
    path(f"{api}/assign/", views.assign, name="assign"),
    path(f"{api}/hand-back/", views.hand_back, name="hand-back"),
    path(f"{api}/reply/", views.reply, name="reply"),
    path(f"{api}/attachments/", views.attach, name="attach"),
    path(f"{api}/notes/", views.note, name="note"),
    path(f"{api}/snooze/", views.snooze, name="snooze"),
    path(f"{api}/resolve/", views.resolve, name="resolve"),
    path(f"{api}/reopen/", views.reopen, name="reopen"),
    path(f"{api}/read/", views.mark_read, name="read"),
    path(f"{api}/assist/", views.assist, name="assist"),
    path(f"{api}/context/", context_views.context, name="context"),
    path(f"{api}/contact/", context_views.contact, name="contact"),
]
