"""The dashboard's words: French first, Bambara where it helps.

One small dict per language. A key missing from Bambara falls back to French, so a page is
never half-blank. The Bambara entries use the words of reference/mali-bambara-sms.md §3.2
(Bamadaba); a native speaker should review them before they go in front of staff.
"""

from __future__ import annotations

from collections.abc import Callable

DEFAULT = "fr"
LANGUAGES = ("fr", "bm")
LANGUAGE_NAMES = {"fr": "Français", "bm": "Bamanankan", "ff": "Fulfulde"}

FR: dict[str, str] = {
    "app": "Dannaya",
    "tagline": "Passerelle SMS et USSD",
    "skip": "Aller au contenu",
    "nav.home": "Accueil",
    "nav.broadcasts": "Diffusions",
    "nav.signed_in_as": "Connecté : {name}",
    "nav.sign_out": "Se déconnecter",
    "lang.switch": "Bamanankan",
    "back": "Retour",
    "error.prefix": "Erreur : ",
    "error.summary": "Il y a un problème",
    "error.not_found": "Page introuvable",
    "error.not_found.body": "Cette page n'existe pas, ou vous n'y avez pas accès.",
    "error.forbidden": "Action refusée",
    "error.forbidden.body": "Votre rôle ne permet pas cette action.",
    "error.csrf": "Formulaire expiré",
    "error.csrf.body": "Ce formulaire n'est plus valable. Rechargez la page et recommencez.",
    "error.not_ready": "Pas encore disponible",
    "error.not_ready.body": "Cette partie du tableau de bord n'est pas encore installée "
                            "sur cette passerelle.",
    "error.bad_request": "Demande incorrecte",
    "error.bad_request.body": "Ce formulaire n'a pas pu être lu. Rechargez la page.",
    "login.title": "Se connecter",
    "login.intro": "Espace des opérateurs. Les comptes sont créés par un administrateur.",
    "login.username": "Nom d'utilisateur",
    "login.password": "Mot de passe",
    "login.submit": "Se connecter",
    "login.wrong": "Nom d'utilisateur ou mot de passe incorrect.",
    "login.throttled": "Trop d'essais. Réessayez dans {n} minutes.",
    "login.throttled.one": "Trop d'essais. Réessayez dans 1 minute.",
    "login.signed_out": "Vous êtes déconnecté.",
    "home.title": "Tableau de bord",
    "home.running": "Diffusions en cours",
    "home.running.none": "Aucune diffusion en cours.",
    "home.delivery_rate": "Taux de remise",
    "home.delivery_rate.hint": "SMS distribués sur SMS remis à l'opérateur, 30 derniers jours",
    "home.delivery_rate.none": "Pas encore de SMS envoyé.",
    "home.subscribers": "Abonnés par cercle",
    "home.subscribers.hint": "Résidents qui ont demandé à recevoir les messages, dans vos cercles.",
    "home.no_area": "Lieu inconnu",
    "home.total": "Total",
    "broadcasts.title": "Diffusions",
    "broadcasts.new": "Nouvelle diffusion",
    "broadcasts.none": "Aucune diffusion pour l'instant.",
    "broadcasts.number": "N°",
    "broadcasts.untitled": "Sans titre",
    "col.title": "Titre",
    "col.status": "Statut",
    "col.created": "Créée le",
    "col.cercle": "Cercle",
    "col.subscribers": "Abonnés",
    "status.scheduled": "Programmée",
    "status.sending": "En cours d'envoi",
    "status.done": "Terminée",
    "status.cancelled": "Annulée",
    "count.recipients": "Destinataires",
    "count.queued": "En attente",
    "count.sent": "Remis à l'opérateur",
    "count.delivered": "Distribués",
    "count.failed": "Échecs",
    "count.expired": "Expirés",
    "count.cancelled": "Annulés",
    "compose.title": "Nouvelle diffusion",
    "compose.audience": "À qui ?",
    "compose.cercles": "Cercles entiers",
    "compose.communes": "Ou des communes",
    "compose.languages": "Langues des résidents",
    "compose.languages.hint": "Aucune case cochée : toutes les langues.",
    "compose.audience.hint": "Aucune case cochée : tous vos cercles.",
    "compose.recipients": "Destinataires",
    "compose.recipients.nojs": "Le nombre exact s'affiche à l'étape suivante.",
    "compose.message": "Le message",
    "compose.message.fr": "En français",
    "compose.message.bm": "En bambara",
    "compose.message.ff": "En fulfulde",
    "compose.message.hint": "N'écrivez ni nom ni lieu précis. Chaque destinataire reçoit "
                            "le texte de sa langue : écrivez-en un pour chaque langue lue "
                            "dans l'audience.",
    "compose.limits": "1 SMS = 160 caractères (153 par partie au-delà), ou 70 (67 par "
                      "partie) si une lettre est hors de l'alphabet GSM.",
    "compose.chars": "caractères",
    "compose.sms": "SMS",
    "compose.encoding": "Encodage",
    "compose.transliterate": "Translittération (lettres compatibles GSM)",
    "compose.transliterate.hint": "Remplace ɛ ɔ ɲ ŋ, les tons et les accents que le GSM "
                                  "n'a pas : les SMS coûtent environ deux fois moins cher.",
    "compose.ucs2_letters": "Ces lettres forcent l'UCS-2 :",
    "compose.replaced_letters": "Lettres remplacées pour rester en GSM-7 :",
    "compose.replaced_by": "devient",
    "compose.removed": "supprimé",
    "compose.cost": "Coût estimé",
    "compose.cost.hint": "{price} {currency} par SMS et par destinataire.",
    "compose.when": "Quand ?",
    "compose.title_field": "Titre (pour vous, il n'est pas envoyé)",
    "compose.send_at": "Envoyer le (heure de Bamako)",
    "compose.send_at.hint": "Laissez vide pour envoyer tout de suite. Rien ne part "
                            "entre 21 h et 7 h : l'envoi attend le matin.",
    "compose.valid_until": "Ne plus envoyer après",
    "compose.valid_until.hint": "Par défaut, 24 heures après le début de l'envoi.",
    "compose.submit": "Vérifier avant l'envoi",
    "check.title": "Vérifiez avant d'envoyer",
    "check.audience": "Audience",
    "check.everyone": "Tous vos cercles",
    "check.all_languages": "Toutes les langues",
    "check.recipients": "Destinataires",
    "check.text": "Texte envoyé",
    "check.segments": "{n} SMS par destinataire",
    "check.one_recipient": "1 destinataire",
    "check.n_recipients": "{n} destinataires",
    "check.total": "SMS au total",
    "check.cost": "Coût estimé",
    "check.saving": "Sans translittération : {cost} {currency}",
    "check.when": "Envoi",
    "check.now": "Dès la confirmation",
    "check.after_quiet": "Après les heures calmes : {when}",
    "check.no_price": "Prix par SMS non configuré (GATEWAY_SMS_PRICE).",
    "compose.recipients.by_language": "dont",
    "check.valid_until": "Validité",
    "check.valid_default": "24 heures",
    "check.change": "Modifier",
    "check.none": "Personne ne recevrait ce message : modifiez l'audience.",
    "check.send": "Envoyer à {n} personnes",
    "check.schedule": "Programmer l'envoi à {n} personnes",
    "check.sending": "Envoi…",
    "progress.title": "Diffusion n° {id}",
    "progress.created": "Diffusion créée.",
    "progress.created.body": "Référence n° {id}. Cette page se met à jour toute seule.",
    "progress.reload": "Actualiser",
    "progress.updated": "Mis à jour à {time}",
    "progress.delivered_of": "{delivered} distribués sur {recipients}",
    "progress.cancel": "Annuler la diffusion",
    "progress.scheduled_for": "Programmée pour le {when}",
    "cancel.title": "Annuler la diffusion n° {id} ?",
    "cancel.body": "Les SMS pas encore remis à l'opérateur ne partiront pas. Ceux déjà "
                   "partis ne peuvent pas être rappelés.",
    "cancel.yes": "Oui, annuler la diffusion",
    "cancel.no": "Non, revenir",
    "cancel.done": "Diffusion annulée.",
    "field.required": "Écrivez au moins un message.",
    "field.scope": "Cette audience sort de vos cercles.",
    "field.missing_text.fr": "Des destinataires lisent le français : écrivez aussi le "
                             "message en français.",
    "field.missing_text.bm": "Des destinataires lisent le bambara : écrivez aussi le "
                             "message en bambara.",
    "field.missing_text.ff": "Des destinataires lisent le fulfulde : écrivez aussi le "
                             "message en fulfulde.",
    "field.send_at": "Date d'envoi illisible (format attendu : AAAA-MM-JJ HH:MM).",
    "field.valid_until": "Date de validité illisible (format attendu : AAAA-MM-JJ HH:MM).",
    "field.idempotency": "Formulaire incomplet : rechargez la page de rédaction.",
    "field.conflict": "Cette diffusion a déjà été envoyée avec un autre contenu. "
                      "Recommencez depuis une nouvelle rédaction.",
}

# Bambara (Bamadaba words; to be reviewed by a native speaker before use).
BM: dict[str, str] = {
    "lang.switch": "Français",
    "nav.home": "Daminɛ",
    "nav.broadcasts": "Cikanw",
    "back": "Segin",
    "login.title": "Don",
    "login.submit": "Don",
    "broadcasts.title": "Cikanw",
    "broadcasts.new": "Cikan kura",
    "compose.title": "Cikan kura",
    "compose.message": "Cikan",
    "compose.message.fr": "Tubabukan na",
    "compose.message.bm": "Bamanankan na",
    "compose.message.ff": "Fulakan na",
    "compose.cercles": "Sɛrikiliw",
    "compose.communes": "Kominiw",
    "col.cercle": "Sɛrikili",
    "cancel.yes": "Ɔwɔ, a dabila",
    "cancel.no": "Ayi, segin",
}

TABLES = {"fr": FR, "bm": BM}


def translator(language: str) -> Callable[..., str]:
    """``t(key, **values)`` for ``language``: the Bambara entry when there is one, else the
    French; ``values`` fill the ``{placeholders}``. A text that is not a key (a message
    from a domain module) is shown as it is."""
    table = TABLES.get(language, FR)

    def t(key: str, **values: object) -> str:
        text = table.get(key) or FR.get(key, key)
        return text.format(**values) if values else text

    return t
