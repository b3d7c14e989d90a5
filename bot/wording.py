"""The bot's own words: what it says when it has no answer (whoever would have answered), and
the words the offline answerer puts around what it quotes from an article. Everything factual
in an answer comes from the articles; only these are the bot's."""

ABSTAIN = (
    "I'm sorry — I couldn't find that in our help articles, and I'd rather not guess. "
    "Would you like me to connect you with a person from our team?"
)
ASK_FOR_DETAIL = (
    "Could you tell me a little more about what you need help with? "
    "For example, an order, a return, your account or one of your devices."
)
LEAD_INS = (
    "Here's what our help centre says:",
    "Sure, here's what I found:",
    "Happy to help with that. From our help centre:",
)
# For an answer with numbered steps.
STEP_LEAD_INS = (
    "Sure, here's how:",
    "Here's how to do it:",
)
POINTER = "You can read more in “{title}”."
SEE_ALSO = "You may also find “{title}” helpful."
HEDGED_LEAD_IN = "I think this is what you're looking for:"
HEDGED_CLOSING = (
    "If that doesn't answer your question, I can connect you with a person from our team."
)
