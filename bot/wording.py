"""The bot's own words, in the customer's language: what it says when it has no answer (whoever
would have answered), the words the offline answerer puts around what it quotes from an
article, its small talk, and the notices the conversation sends in its name (a person will
join, the team is away, an email address noted, an answer that failed). Everything factual in
an answer comes from the articles; only these are the bot's.

The words come in English, German, French, Spanish and Italian (WORDINGS), as the customer
writes: `customer_language(messages)` is the language of the customer's latest message, or
when that one doesn't tell (too short: "ok", "order 4411") of the newest earlier one that
does; `wording_for(code)` gives the words for it, English for any other language or none.

A plain Python catalog rather than gettext: five languages of some thirty strings each, read
by code and tests alike, with nothing to compile or install. To add a language, add a Wording
below with every field translated (tests/bot/test_wording.py checks that each one keeps the
English placeholders) and put it in WORDINGS; knowledge.language must detect the language
(DETECTED_LANGUAGES).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from django.conf import settings

from knowledge.language import detect_language

# How many of the customer's messages, newest first, may tell their language.
CUSTOMER_LANGUAGE_LOOKBACK = 5


@dataclass(frozen=True)
class Wording:
    """Everything the bot says in its own words, in one language."""

    language: str  # ISO 639-1
    # No answer in the help articles: said plainly, with a person offered.
    abstain: str
    # A question about something else than {company} (another company's product, general
    # knowledge) or an attempt to change the bot's instructions: declined, a person offered.
    out_of_domain: str
    # A message with nothing to look up ("can you help me?").
    ask_for_detail: str
    # Before an answer quoted from an article (one is picked per question).
    lead_ins: tuple[str, ...]
    # Before an answer with numbered steps.
    step_lead_ins: tuple[str, ...]
    # After an answer: {title} is an article's title, quoted as the language quotes.
    pointer: str
    see_also: str
    # When nothing of the best passage could be quoted.
    article_should_help: str
    # Around an answer retrieval was less sure of.
    hedged_lead_in: str
    hedged_closing: str
    # Small talk ({company}: COMPANY_NAME).
    welcome_and_bye: str
    bye: str
    welcome: str
    who: str
    how_are_you: str
    greeting: str
    acknowledged: str
    # "No", "no thanks" (to the offer of a person, or anything else): no question back.
    declined: str
    # The conversation's notices.
    person_will_join: str
    team_away: str  # {when}: one of the opening_* below, or opening_soon
    opening_today: str  # {time}, {zone}
    opening_tomorrow: str
    opening_on: str  # {weekday} too: within the coming week
    opening_next: str  # {weekday} too: the same weekday a week on
    opening_soon: str
    clock: str  # {hour}, {minute}: numbers
    weekdays: tuple[str, ...]  # Monday first
    email_saved: str  # {email}
    apology: str  # a reply that failed for a technical reason
    # A reply waiting for its turn in the model's budget (a burst of customers): said once, in
    # place of the answer until it starts.
    one_moment: str
    # The chat's header ({minutes}: minutes_one or minutes_many; {when}: as in team_away):
    # an agent has the inbox open / nobody has but it is within business hours / neither.
    team_online: str
    team_replies_in: str
    team_away_until: str
    minutes_one: str
    minutes_many: str  # {n}

    def no_answer(self, *, out_of_domain: bool = False) -> str:
        """The refusal: "not something I can help with here" for a message that is not about
        the company (bot/scope.py), else "I couldn't find that in our help articles"."""
        if out_of_domain:
            return self.out_of_domain.format(company=settings.COMPANY_NAME)
        return self.abstain

    def opening(self, *, days: int, weekday: int, hour: int, minute: int, zone: str) -> str:
        """When the team is back, in words: `days` from today, on `weekday` (Monday is 0)."""
        if days == 0:
            template = self.opening_today
        elif days == 1:
            template = self.opening_tomorrow
        elif days >= 7:
            template = self.opening_next
        else:
            template = self.opening_on
        return template.format(
            weekday=self.weekdays[weekday],
            time=self.clock.format(hour=hour, minute=minute),
            zone=zone,
        )


ENGLISH = Wording(
    language="en",
    abstain=(
        "I'm sorry — I couldn't find that in our help articles, and I'd rather not guess. "
        "Would you like me to connect you with a person from our team?"
    ),
    out_of_domain=(
        "I'm sorry — that's not something I can help with here: I can only answer questions "
        "about {company}. Would you like me to connect you with a person from our team?"
    ),
    ask_for_detail=(
        "Could you tell me a little more about what you need help with? "
        "For example, an order, a return, your account or one of your devices."
    ),
    lead_ins=(
        "Here's what our help centre says:",
        "Sure, here's what I found:",
        "Happy to help with that. From our help centre:",
    ),
    step_lead_ins=(
        "Sure, here's how:",
        "Here's how to do it:",
    ),
    pointer="You can read more in “{title}”.",
    see_also="You may also find “{title}” helpful.",
    article_should_help="This article should help: “{title}”.",
    hedged_lead_in="I think this is what you're looking for:",
    hedged_closing=(
        "If that doesn't answer your question, I can connect you with a person from our team."
    ),
    welcome_and_bye="You're welcome! Thanks for chatting with us, and have a great day.",
    bye="Thanks for chatting with us. Have a great day!",
    welcome="You're welcome! Is there anything else I can help you with?",
    who=(
        "I'm the {company} virtual assistant. I answer questions from our help articles, "
        "and I can connect you with a person from our team. What can I help you with?"
    ),
    how_are_you="I'm doing well, thank you for asking! How can I help you today?",
    greeting="Hi! I'm the {company} assistant. How can I help you today?",
    acknowledged="Great! Let me know if there's anything else I can help you with.",
    declined="No problem. I'm here if you need anything else.",
    person_will_join=(
        "I've asked a person from our team to join. They'll reply here as soon as they can."
    ),
    team_away=(
        "Our team is away right now and back {when}. Please leave your email address and "
        "we'll answer you by email, or here once we're back."
    ),
    opening_today="today at {time} ({zone} time)",
    opening_tomorrow="tomorrow at {time} ({zone} time)",
    opening_on="on {weekday} at {time} ({zone} time)",
    opening_next="next {weekday} at {time} ({zone} time)",
    opening_soon="soon",
    clock="{hour:02d}:{minute:02d}",
    weekdays=("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    email_saved="Thanks! We'll answer you at {email}.",
    apology=(
        "Sorry — I couldn't finish my answer because of a technical problem on our side. "
        "Please try again in a moment, or ask to talk to a person and our team will help."
    ),
    one_moment=(
        "One moment, please — a lot of people are asking right now. "
        "I'll answer you as soon as I can."
    ),
    team_online="Our team is online · typically replies in {minutes}",
    team_replies_in="Our team typically replies in {minutes}",
    team_away_until="Our team is away · back {when}",
    minutes_one="1 minute",
    minutes_many="{n} minutes",
)

GERMAN = Wording(
    language="de",
    abstain=(
        "Das tut mir leid – dazu habe ich in unseren Hilfeartikeln nichts gefunden, und ich "
        "möchte nicht raten. Soll ich Sie mit jemandem aus unserem Team verbinden?"
    ),
    out_of_domain=(
        "Das tut mir leid – dabei kann ich hier nicht helfen: Ich beantworte nur Fragen zu "
        "{company}. Soll ich Sie mit jemandem aus unserem Team verbinden?"
    ),
    ask_for_detail=(
        "Könnten Sie mir etwas genauer sagen, wobei Sie Hilfe brauchen? "
        "Zum Beispiel bei einer Bestellung, einer Rücksendung, Ihrem Konto oder einem Ihrer "
        "Geräte."
    ),
    lead_ins=(
        "Das steht dazu in unserem Hilfe-Center:",
        "Gern, das habe ich gefunden:",
        "Dabei helfe ich Ihnen gern. Aus unserem Hilfe-Center:",
    ),
    step_lead_ins=(
        "Gern, so geht's:",
        "So gehen Sie vor:",
    ),
    pointer="Mehr dazu lesen Sie in „{title}“.",
    see_also="Vielleicht hilft Ihnen auch „{title}“ weiter.",
    article_should_help="Dieser Artikel sollte Ihnen weiterhelfen: „{title}“.",
    hedged_lead_in="Ich glaube, das ist es, wonach Sie suchen:",
    hedged_closing=(
        "Falls das Ihre Frage nicht beantwortet, kann ich Sie mit jemandem aus unserem Team "
        "verbinden."
    ),
    welcome_and_bye="Gern geschehen! Danke, dass Sie uns geschrieben haben, und einen schönen Tag.",
    bye="Danke, dass Sie uns geschrieben haben. Einen schönen Tag noch!",
    welcome="Gern geschehen! Kann ich Ihnen sonst noch bei etwas helfen?",
    who=(
        "Ich bin der virtuelle Assistent von {company}. Ich beantworte Fragen anhand unserer "
        "Hilfeartikel und kann Sie mit jemandem aus unserem Team verbinden. Wobei kann ich "
        "Ihnen helfen?"
    ),
    how_are_you="Danke der Nachfrage, mir geht es gut! Wie kann ich Ihnen heute helfen?",
    greeting="Hallo! Ich bin der Assistent von {company}. Wie kann ich Ihnen heute helfen?",
    acknowledged="Prima! Sagen Sie gern Bescheid, wenn ich Ihnen noch bei etwas helfen kann.",
    declined="Kein Problem. Ich bin hier, falls Sie noch etwas brauchen.",
    person_will_join=(
        "Ich habe jemanden aus unserem Team dazugebeten. Sie bekommen hier so bald wie "
        "möglich eine Antwort."
    ),
    team_away=(
        "Unser Team ist gerade nicht erreichbar und {when} wieder für Sie da. Hinterlassen "
        "Sie bitte Ihre E-Mail-Adresse, dann antworten wir Ihnen per E-Mail oder hier, sobald "
        "wir zurück sind."
    ),
    opening_today="heute um {time} (Zeitzone {zone})",
    opening_tomorrow="morgen um {time} (Zeitzone {zone})",
    opening_on="am {weekday} um {time} (Zeitzone {zone})",
    opening_next="nächsten {weekday} um {time} (Zeitzone {zone})",
    opening_soon="bald",
    clock="{hour:02d}:{minute:02d} Uhr",
    weekdays=("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"),
    email_saved="Danke! Wir antworten Ihnen an {email}.",
    apology=(
        "Entschuldigung – wegen eines technischen Problems bei uns konnte ich meine Antwort "
        "nicht fertigstellen. Bitte versuchen Sie es gleich noch einmal, oder bitten Sie "
        "darum, mit jemandem aus unserem Team zu sprechen – wir helfen Ihnen gern weiter."
    ),
    one_moment=(
        "Einen Moment bitte – gerade schreiben uns sehr viele Menschen. "
        "Ich antworte Ihnen so schnell wie möglich."
    ),
    team_online="Unser Team ist online · antwortet meist in {minutes}",
    team_replies_in="Unser Team antwortet meist in {minutes}",
    team_away_until="Unser Team ist gerade nicht da · zurück {when}",
    minutes_one="1 Minute",
    minutes_many="{n} Minuten",
)

FRENCH = Wording(
    language="fr",
    abstain=(
        "Toutes mes excuses, je n'ai pas trouvé cette information dans nos articles d'aide et "
        "je préfère ne pas deviner. Souhaitez-vous que je vous mette en relation avec un "
        "membre de notre équipe ?"
    ),
    out_of_domain=(
        "Toutes mes excuses, je ne peux pas vous aider sur ce point ici : je réponds "
        "uniquement aux questions concernant {company}. Souhaitez-vous que je vous mette en "
        "relation avec un membre de notre équipe ?"
    ),
    ask_for_detail=(
        "Pourriez-vous m'en dire un peu plus sur ce pour quoi vous avez besoin d'aide ? "
        "Par exemple une commande, un retour, votre compte ou l'un de vos appareils."
    ),
    lead_ins=(
        "Voici ce qu'indique notre centre d'aide :",
        "Bien sûr, voici ce que j'ai trouvé :",
        "Je vous aide volontiers. D'après notre centre d'aide :",
    ),
    step_lead_ins=(
        "Bien sûr, voici comment faire :",
        "Voici la marche à suivre :",
    ),
    pointer="Pour en savoir plus, consultez « {title} ».",
    see_also="L'article « {title} » pourrait aussi vous être utile.",
    article_should_help="Cet article devrait vous aider : « {title} ».",
    hedged_lead_in="Je pense que voici ce que vous cherchez :",
    hedged_closing=(
        "Si cela ne répond pas à votre question, je peux vous mettre en relation avec un "
        "membre de notre équipe."
    ),
    welcome_and_bye="Avec plaisir ! Merci de nous avoir écrit, et excellente journée.",
    bye="Merci de nous avoir écrit. Excellente journée !",
    welcome="Avec plaisir ! Puis-je vous aider pour autre chose ?",
    who=(
        "Je suis l'assistant virtuel de {company}. Je réponds aux questions à partir de nos "
        "articles d'aide et je peux vous mettre en relation avec un membre de notre équipe. "
        "Comment puis-je vous aider ?"
    ),
    how_are_you="Je vais bien, merci de demander ! Comment puis-je vous aider aujourd'hui ?",
    greeting="Bonjour ! Je suis l'assistant de {company}. Comment puis-je vous aider aujourd'hui ?",
    acknowledged="Parfait ! N'hésitez pas si je peux vous aider pour autre chose.",
    declined="Pas de problème. Je reste à votre disposition si vous avez besoin d'autre chose.",
    person_will_join=(
        "J'ai demandé à un membre de notre équipe de nous rejoindre. Il vous répondra ici dès "
        "que possible."
    ),
    team_away=(
        "Notre équipe est absente pour le moment et sera de retour {when}. Laissez-nous votre "
        "adresse e-mail : nous vous répondrons par e-mail, ou ici dès notre retour."
    ),
    opening_today="aujourd'hui à {time} (fuseau horaire {zone})",
    opening_tomorrow="demain à {time} (fuseau horaire {zone})",
    opening_on="{weekday} à {time} (fuseau horaire {zone})",
    opening_next="{weekday} prochain à {time} (fuseau horaire {zone})",
    opening_soon="bientôt",
    clock="{hour} h {minute:02d}",
    weekdays=("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"),
    email_saved="Merci ! Nous vous répondrons à l'adresse {email}.",
    apology=(
        "Toutes mes excuses : un problème technique de notre côté ne m'a pas permis de "
        "terminer ma réponse. Veuillez réessayer dans un instant, ou demandez à parler à un "
        "membre de notre équipe, qui vous aidera."
    ),
    one_moment=(
        "Un instant, s'il vous plaît\u00a0: beaucoup de personnes nous écrivent en ce moment. "
        "Je vous réponds dès que possible."
    ),
    team_online="Notre équipe est en ligne · répond généralement en {minutes}",
    team_replies_in="Notre équipe répond généralement en {minutes}",
    team_away_until="Notre équipe est absente · de retour {when}",
    minutes_one="une minute",
    minutes_many="{n} minutes environ",
)

SPANISH = Wording(
    language="es",
    abstain=(
        "Lo siento, no he encontrado esa información en nuestros artículos de ayuda y prefiero "
        "no adivinar. ¿Quiere que le ponga en contacto con una persona de nuestro equipo?"
    ),
    out_of_domain=(
        "Lo siento, no puedo ayudarle con eso aquí: solo respondo preguntas sobre {company}. "
        "¿Quiere que le ponga en contacto con una persona de nuestro equipo?"
    ),
    ask_for_detail=(
        "¿Podría contarme un poco más sobre en qué necesita ayuda? "
        "Por ejemplo, un pedido, una devolución, su cuenta o alguno de sus dispositivos."
    ),
    lead_ins=(
        "Esto es lo que dice nuestro centro de ayuda:",
        "Claro, esto es lo que he encontrado:",
        "Con mucho gusto le ayudo. Según nuestro centro de ayuda:",
    ),
    step_lead_ins=(
        "Claro, así se hace:",
        "Estos son los pasos:",
    ),
    pointer="Puede leer más en «{title}».",
    see_also="También le puede resultar útil «{title}».",
    article_should_help="Este artículo debería ayudarle: «{title}».",
    hedged_lead_in="Creo que esto es lo que busca:",
    hedged_closing=(
        "Si esto no responde a su pregunta, puedo ponerle en contacto con una persona de "
        "nuestro equipo."
    ),
    welcome_and_bye="¡De nada! Gracias por escribirnos y que tenga un buen día.",
    bye="Gracias por escribirnos. ¡Que tenga un buen día!",
    welcome="¡De nada! ¿Puedo ayudarle en algo más?",
    who=(
        "Soy el asistente virtual de {company}. Respondo preguntas a partir de nuestros "
        "artículos de ayuda y puedo ponerle en contacto con una persona de nuestro equipo. "
        "¿En qué puedo ayudarle?"
    ),
    how_are_you="Muy bien, ¡gracias por preguntar! ¿En qué puedo ayudarle hoy?",
    greeting="¡Hola! Soy el asistente de {company}. ¿En qué puedo ayudarle hoy?",
    acknowledged="¡Perfecto! Dígame si puedo ayudarle en algo más.",
    declined="No hay problema. Aquí estoy si necesita algo más.",
    person_will_join=(
        "He pedido a una persona de nuestro equipo que se una a la conversación. Le responderá "
        "aquí en cuanto pueda."
    ),
    team_away=(
        "Nuestro equipo no está disponible en este momento y volverá {when}. Déjenos su "
        "dirección de correo electrónico y le responderemos por correo, o aquí cuando volvamos."
    ),
    opening_today="hoy a las {time} (zona horaria {zone})",
    opening_tomorrow="mañana a las {time} (zona horaria {zone})",
    opening_on="el {weekday} a las {time} (zona horaria {zone})",
    opening_next="el próximo {weekday} a las {time} (zona horaria {zone})",
    opening_soon="pronto",
    clock="{hour:02d}:{minute:02d}",
    weekdays=("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"),
    email_saved="¡Gracias! Le responderemos en {email}.",
    apology=(
        "Lo siento, no he podido terminar mi respuesta por un problema técnico de nuestra "
        "parte. Vuelva a intentarlo en un momento, o pida hablar con una persona y nuestro "
        "equipo le ayudará."
    ),
    one_moment=(
        "Un momento, por favor: ahora mismo nos escribe mucha gente. Le respondo en cuanto pueda."
    ),
    team_online="Nuestro equipo está en línea · suele responder en {minutes}",
    team_replies_in="Nuestro equipo suele responder en {minutes}",
    team_away_until="Nuestro equipo no está disponible · vuelve {when}",
    minutes_one="1 minuto",
    minutes_many="{n} minutos",
)

ITALIAN = Wording(
    language="it",
    abstain=(
        "Mi dispiace, non ho trovato questa informazione nei nostri articoli di assistenza e "
        "preferisco non tirare a indovinare. Vuole che la metta in contatto con una persona "
        "del nostro team?"
    ),
    out_of_domain=(
        "Mi dispiace, qui non posso aiutarla con questo: rispondo solo a domande su {company}. "
        "Vuole che la metta in contatto con una persona del nostro team?"
    ),
    ask_for_detail=(
        "Potrebbe dirmi qualcosa in più su ciò per cui le serve aiuto? "
        "Ad esempio un ordine, un reso, il suo account o uno dei suoi dispositivi."
    ),
    lead_ins=(
        "Ecco cosa dice il nostro centro assistenza:",
        "Certo, ecco cosa ho trovato:",
        "La aiuto volentieri. Dal nostro centro assistenza:",
    ),
    step_lead_ins=(
        "Certo, ecco come fare:",
        "Ecco come procedere:",
    ),
    pointer="Per saperne di più, consulti «{title}».",
    see_also="Potrebbe esserle utile anche «{title}».",
    article_should_help="Questo articolo dovrebbe esserle utile: «{title}».",
    hedged_lead_in="Credo che sia questo ciò che cerca:",
    hedged_closing=(
        "Se questo non risponde alla sua domanda, posso metterla in contatto con una persona "
        "del nostro team."
    ),
    welcome_and_bye="Prego! Grazie per averci scritto e buona giornata.",
    bye="Grazie per averci scritto. Buona giornata!",
    welcome="Prego! Posso aiutarla in qualcos'altro?",
    who=(
        "Sono l'assistente virtuale di {company}. Rispondo alle domande in base ai nostri "
        "articoli di assistenza e posso metterla in contatto con una persona del nostro team. "
        "Come posso aiutarla?"
    ),
    how_are_you="Bene, grazie per averlo chiesto! Come posso aiutarla oggi?",
    greeting="Salve! Sono l'assistente di {company}. Come posso aiutarla oggi?",
    acknowledged="Perfetto! Mi faccia sapere se posso aiutarla in qualcos'altro.",
    declined="Nessun problema. Sono qui se le serve altro.",
    person_will_join=(
        "Ho chiesto a una persona del nostro team di unirsi alla conversazione. Le risponderà "
        "qui appena possibile."
    ),
    team_away=(
        "Il nostro team al momento non è disponibile e tornerà {when}. Ci lasci il suo "
        "indirizzo email: le risponderemo via email, oppure qui al nostro ritorno."
    ),
    opening_today="oggi alle {time} (fuso orario {zone})",
    opening_tomorrow="domani alle {time} (fuso orario {zone})",
    opening_on="{weekday} alle {time} (fuso orario {zone})",
    opening_next="{weekday} della prossima settimana alle {time} (fuso orario {zone})",
    opening_soon="presto",
    clock="{hour:02d}:{minute:02d}",
    weekdays=("lunedì", "martedì", "mercoledì", "giovedì", "venerdì", "sabato", "domenica"),
    email_saved="Grazie! Le risponderemo all'indirizzo {email}.",
    apology=(
        "Mi scusi: per un problema tecnico da parte nostra non è stato possibile completare la "
        "risposta. Riprovi tra un momento, oppure chieda di parlare con una persona e il nostro "
        "team la aiuterà."
    ),
    one_moment=(
        "Un momento, per favore: in questo momento ci scrivono molte persone. "
        "Le rispondo appena possibile."
    ),
    team_online="Il nostro team è online · di solito risponde in {minutes}",
    team_replies_in="Il nostro team di solito risponde in {minutes}",
    team_away_until="Il nostro team è assente · di ritorno {when}",
    minutes_one="1 minuto",
    minutes_many="{n} minuti",
)


_FRENCH_SPACE = re.compile(r" (?=[?!:;»])|(?<=«) ")


def _french_spaced(value: Any) -> Any:
    if isinstance(value, str):
        return _FRENCH_SPACE.sub("\u00a0", value)
    if isinstance(value, tuple):
        return tuple(_FRENCH_SPACE.sub("\u00a0", str(item)) for item in value)
    return value


def _with_french_spacing(wording: Wording) -> Wording:
    """French sets a no-break space before ? ! : ; and inside « », so a line never starts with
    one of them. Written with plain spaces above, for legibility."""
    return replace(
        wording,
        **{f.name: _french_spaced(getattr(wording, f.name)) for f in fields(wording)},
    )


FRENCH = _with_french_spacing(FRENCH)

WORDINGS = {wording.language: wording for wording in (ENGLISH, GERMAN, FRENCH, SPANISH, ITALIAN)}


def wording_for(language: str | None) -> Wording:
    """The bot's words in a language ("de", "de-CH"), English for one it has no words in."""
    if not language:
        return ENGLISH
    return WORDINGS.get(re.split(r"[-_]", language, maxsplit=1)[0].lower(), ENGLISH)


def customer_language(messages: Sequence[str]) -> str | None:
    """The language the customer writes in, from their messages (oldest first): the latest
    one's, or when it doesn't tell (knowledge.language.detect_language is unsure: "ok",
    "order 4411"), the newest earlier one's that does, among the last
    CUSTOMER_LANGUAGE_LOOKBACK; None when none tells."""
    for message in list(messages)[::-1][:CUSTOMER_LANGUAGE_LOOKBACK]:
        language = detect_language(message)
        if language is not None:
            return language
    return None
