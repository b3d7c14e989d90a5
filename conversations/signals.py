"""What this app tells apps built on it, so that it never imports them."""

from django.dispatch import Signal

#: Something the team's views show of a conversation changed (a message, a status, a rating).
#: Sent inside the change's transaction with `conversation_id`; receivers announce it after
#: the commit (the inbox sends the conversation's row to every agent).
conversation_updated = Signal()
