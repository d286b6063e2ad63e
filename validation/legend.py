"""The words of the compliance pages: each reason and confidentiality code in French, run states,
Paris time to the second, percentages the French way."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from mes_rollout.constants import DmpIntakeReason, HoldBackReason, MigrationRunState, SkipReason

PARIS = ZoneInfo("Europe/Paris")
MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
          "novembre", "décembre")  # fmt: skip

# Every reason code a migration page can show, in French words (a test checks none is missing).
REASON_LABELS: dict[str, str] = {
    HoldBackReason.DMP_AFTER_CUTOFF: "DMP créé à partir du 1er juillet 2021 : tout le DMP est retenu",
    HoldBackReason.IDENTITY_MISMATCH: "NIR, date de naissance ou sexe du DMP différents du référentiel : tout le DMP est retenu",
    HoldBackReason.UNKNOWN_TYPE_CODE: "code de type de document absent de la table acceptée",
    HoldBackReason.CLASS_TYPE_MISMATCH: "code de classe qui ne correspond pas au code de type",
    HoldBackReason.BAD_CONFIDENTIALITY: "code de confidentialité invalide (pas exactement un niveau N, R ou V, "
    "indicateur inconnu ou répété)",
    HoldBackReason.DATE_IN_FUTURE: "date de création ou de début de prise en charge postérieure au jour de l'exécution",
    HoldBackReason.DATE_BEFORE_BIRTH: "date de création ou de prise en charge plus d'un an avant la naissance",
    HoldBackReason.CHAIN_CYCLE: "la chaîne de versions du document boucle sur elle-même",
    HoldBackReason.CHAIN_MISSING_LINK: "la chaîne de versions cite un document absent du DMP",
    HoldBackReason.CONTENT_MISSING: "contenu du document introuvable dans l'extraction",
    HoldBackReason.SIZE_MISMATCH: "taille du contenu différente de la taille déclarée",
    HoldBackReason.HASH_MISMATCH: "empreinte SHA-1 du contenu différente de l'empreinte déclarée",
    HoldBackReason.CHAIN_FORK: "deux versions remplacent la même : pas de version courante unique",
    HoldBackReason.CHAIN_VERSION_HELD_BACK: "une autre version de la chaîne est retenue : la chaîne passe entière ou pas du tout",
    HoldBackReason.CONTENT_OUTSIDE_EXTRACT: "chemin du contenu absolu ou hors du dossier de l'extraction : jamais lu",
    HoldBackReason.CONTENT_LINK: "chemin du contenu passant par un lien symbolique : jamais lu",
    HoldBackReason.CONTENT_NOT_REGULAR: "chemin du contenu qui n'est pas un fichier ordinaire : jamais lu",
    HoldBackReason.CONTENT_TOO_LARGE: "taille déclarée ou réelle au-delà du maximum autorisé : pas lu en entier",
    SkipReason.DELETED: "document supprimé dans le DMP : les documents supprimés ne sont pas repris",
    SkipReason.DUPLICATE: "doublon : une autre copie de même identifiant unique est conservée",
    DmpIntakeReason.MISSING_FIELD: "valeur obligatoire absente : ligne de l'extraction non chargée",
    DmpIntakeReason.BAD_TIMESTAMP: "horodatage qui n'est pas au format ISO 8601 avec décalage horaire",
    DmpIntakeReason.BAD_DATE: "date de naissance qui n'est pas une date AAAA-MM-JJ",
    DmpIntakeReason.BAD_SIZE: "taille qui n'est pas un nombre entier d'octets",
    DmpIntakeReason.BAD_STATUS: "statut de DMP ou de document inconnu",
    DmpIntakeReason.DUPLICATE_DMP: "même identifiant de DMP plus haut dans le fichier : la première ligne l'emporte",
    DmpIntakeReason.DUPLICATE_ENTRY: "même identifiant de document plus haut dans le fichier : la première ligne l'emporte",
    DmpIntakeReason.UNKNOWN_DMP: "document d'un DMP inconnu de cette extraction et des précédentes",
}

CONFIDENTIALITY_LABELS: dict[str, str] = {
    "N": "confidentialité normale",
    "R": "confidentialité restreinte (accès limité)",
    "V": "confidentialité très restreinte (accès le plus limité)",
    "MASQUE_PS": "masqué aux professionnels de santé",
    "INVISIBLE_PATIENT": "invisible pour le patient",
    "INVISIBLE_REPRESENTANTS_LEGAUX": "invisible pour les représentants légaux",
}

OUTCOME_LABELS: dict[str, str] = {"migrated": "migrés", "held_back": "retenus", "skipped": "écartés"}

STATE_LABELS: dict[str, str] = {
    MigrationRunState.CLASSIFYING: "en cours de classement",
    MigrationRunState.CLASSIFIED: "classée, en attente du seuil de qualité",
    MigrationRunState.STOPPED: "arrêtée par le seuil de qualité",
    MigrationRunState.COMMITTING: "en cours d'application",
    MigrationRunState.COMMITTED: "appliquée, en cours de validation",
    MigrationRunState.SUCCEEDED: "réussie",
    MigrationRunState.FAILED: "échouée",
}


def paris_time(moment: dt.datetime | None) -> str:
    """'1 mars 2022 à 09:14:03 (heure de Paris)': the moment in Paris, to the second."""
    if moment is None:
        return ""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no place in a compliance page")
    local = moment.astimezone(PARIS)
    return f"{local.day} {MONTHS[local.month - 1]} {local.year} à {local:%H:%M:%S} (heure de Paris)"


def paris_day(day: dt.date) -> str:
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def percent(rate: float) -> str:
    """0.05 -> '5,00 %' (a narrow no-break space would be typographic; a plain one reads everywhere)."""
    return f"{rate * 100:.2f}".replace(".", ",") + " %"


def confidentiality_codes(value: str | None) -> list[str]:
    """The codes of a confidentiality value as written ('R|MASQUE_PS' -> ['R', 'MASQUE_PS'])."""
    return [code for code in (value or "").split("|") if code]
