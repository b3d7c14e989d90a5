"""The bot: the one place an answer is composed (see docs/architecture.md).

config     which prompt version's settings an answer uses (the studio plugs in its own)
prompt     the request a provider answers: system prompt, history within budget, passages
grounding  what the knowledge base has for the latest message
guards     abstaining before any model, and the model's no-answer marker
providers  the provider interface, OpenAI-compatible servers, the offline answerer
run        the one loop that streams an answer
"""
