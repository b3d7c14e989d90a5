"""Who answers: the provider interface (base.py), any OpenAI-compatible server (openai.py), the
offline answerer (offline.py), and which one is configured (registry.py)."""
