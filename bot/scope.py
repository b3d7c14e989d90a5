"""What the bot is here for: questions about the company. Two kinds of message are declined as
out of its domain ("I can only answer questions about {company}"), with a person offered,
instead of being answered from a look-alike article:

- an attempt to change the bot's instructions or read them (prompt injection), recognised by
  its wording in English, German, French, Spanish and Italian before anything is searched: no
  article answers it, and no model should see it as a question;
- a question retrieval finds nothing for whose words the knowledge base barely knows (another
  company's product, general knowledge): `looks_out_of_domain`.

A question in the company's own words that no article answers (a near miss) is not out of
domain: it gets "I couldn't find that in our help articles".
"""

from __future__ import annotations

import re

# Written from how injections are commonly phrased, not from any question set.
_INJECTION = re.compile(
    r"""
    \b(?:ignore|disregard|forget|override|bypass)\b[^.?!\n]{0,40}?
        \b(?:previous|prior|above|earlier|preceding|all|your|any|these|those)\b[^.?!\n]{0,30}?
        \b(?:instructions?|rules?|prompts?|directions?|guidelines?|guardrails?|restrictions?)\b
  | \b(?:system|developer|hidden|initial|original)\s+(?:prompt|message|instructions?)\b
  | \b(?:reveal|print|show|repeat|output|tell\ me|display|dump|leak)\b[^.?!\n]{0,30}?
        \b(?:your\s+(?:instructions|prompt|rules|configuration|guidelines)
            |the\ (?:prompt|instructions)\ you)\b
  | \byou\ are\ (?:now|no\ longer)\b
  | \bfrom\ now\ on,?\ (?:you|act|respond|answer|reply|pretend)\b
  | \b(?:pretend|act)\ (?:to\ be|as\ if|you\ are|like\ you)\b
  | \bact\ as\ (?:a|an|my)\b
  | \b(?:jailbreak|jailbroken|DAN\ mode|developer\ mode|god\ mode)\b
  | \bnew\ instructions?\s*:
  | \bignoriere?\b[^.?!\n]{0,40}?\b(?:anweisungen|regeln|vorgaben|instruktionen)\b
  | \b(?:vergiss|vergessen\ sie)\b[^.?!\n]{0,40}?\b(?:anweisungen|regeln|vorgaben)\b
  | \bdu\ bist\ (?:jetzt|ab\ sofort|nun)\b
  | \bignore[zr]?\b[^.?!\n]{0,40}?\b(?:instructions|consignes|règles)\b
  | \b(?:oublie[zr]?)\b[^.?!\n]{0,40}?\b(?:instructions|consignes|règles)\b
  | \bignor[ae](?:r|d)?\b[^.?!\n]{0,40}?\b(?:instrucciones|reglas|indicaciones)\b
  | \bolvida\b[^.?!\n]{0,40}?\b(?:instrucciones|reglas)\b
  | \bignora(?:re)?\b[^.?!\n]{0,40}?\b(?:istruzioni|regole|indicazioni)\b
  | \bdimentica\b[^.?!\n]{0,40}?\b(?:istruzioni|regole)\b
  | \b(?:prompt\ (?:di\ )?sistema|prompt\ (?:del\ )?sistema|prompt\ système|systemprompt)\b
    """,
    re.IGNORECASE | re.VERBOSE,
)


def is_prompt_injection(message: str) -> bool:
    """Whether a message tries to change or read the bot's instructions."""
    return bool(_INJECTION.search(message))
