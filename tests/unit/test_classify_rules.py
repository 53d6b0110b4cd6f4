"""The classify rules and decide(): one behaviour per test, on mails not in the dev set."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from mailbot import config as config_mod
from mailbot.classify.decide import decide
from mailbot.classify.rules import RULES, RuleContext
from mailbot.classify.text import fold, fold_lines, join_folded, split_body
from mailbot.domain import LOOP_HEADER, Attachment, Decision, LicenseRecord, Mail, Priority, TicketInfo, Tier

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=ZoneInfo("Europe/Prague"))
CONFIG = config_mod.load()
REGISTRY = {
    "11112222": LicenseRecord("11112222", "Firma a.s.", "firma.cz", date(2024, 1, 1), Tier.HOTLINE, None),
    "33334444": LicenseRecord("33334444", "Stará s.r.o.", "stara.cz", date(2025, 1, 1), Tier.START, None),
    "55556666": LicenseRecord("55556666", "Nula s.r.o.", "nula.cz", date(2025, 1, 1), Tier.NONE, None),
    "77778888": LicenseRecord("77778888", "Nová s.r.o.", "nova.cz", date(2026, 10, 1), Tier.START, None),
}


class Registry:
    def get(self, number: str) -> LicenseRecord | None:
        return REGISTRY.get(number)

    def rank(self, number: str) -> int:
        return list(REGISTRY).index(number) if number in REGISTRY else len(REGISTRY)


class Tickets:
    """A ticket index: numbers known to exist, some with their details."""

    def __init__(self, *known: str | TicketInfo) -> None:
        self.info = {t.number: t for t in known if isinstance(t, TicketInfo)}
        self.known = {t if isinstance(t, str) else t.number for t in known}

    def exists(self, ref: str) -> bool:
        return ref in self.known

    def get(self, ref: str) -> TicketInfo | None:
        return self.info.get(ref)

    def by_message_ids(self, message_ids: tuple[str, ...]) -> str | None:
        return None


def ctx(known_tickets: Tickets | None = None) -> RuleContext:
    return RuleContext.from_config(CONFIG, Registry(), NOW, known_tickets)


def make_mail(
    text: str = "",
    subject: str = "Dotaz",
    from_addr: str = "zakaznik@firma.cz",
    headers: Mapping[str, tuple[str, ...]] | None = None,
    *,
    to: tuple[str, ...] = ("podpora@estelar.example",),
    html: str = "",
    message_id: str = "<abc@firma.cz>",
    in_reply_to: tuple[str, ...] = (),
    references: tuple[str, ...] = (),
    return_path: str | None = None,
    content_type: str = "text/plain",
    report_type: str = "",
    attachments: tuple[Attachment, ...] = (),
) -> Mail:
    """A parsed mail as the parser would hand it over."""
    return Mail(
        message_id=message_id,
        from_addr=from_addr,
        from_name="",
        to=to,
        cc=(),
        subject=subject,
        date=None,
        in_reply_to=in_reply_to,
        references=references,
        return_path=return_path,
        headers=dict(headers or {}),
        content_type=content_type,
        report_type=report_type,
        text=text,
        html=html,
        attachments=attachments,
    )


REQUEST = (
    "Dobrý den,\n\nv měsíční sestavě přesčasů se u odpolední směny nepočítají přestávky "
    "a hodiny nesedí s docházkovým kalendářem. Jak to opravit?\n\nLicence: 1111 2222\n\n"
    "S pozdravem\nJan Novák\nFirma a.s.\n"
)


def run(mail: Mail, context: RuleContext | None = None) -> Decision:
    return decide(mail, context or ctx())


# --- audit trail -------------------------------------------------------------------------


def test_reasons_record_every_rule_that_ran_in_order() -> None:
    """The audit trail names each rule that ran, with misses, up to the deciding hit."""
    d = run(make_mail(REQUEST))
    names = [r.rule for r in d.reasons]
    assert names == [rule.__name__ for rule in RULES]
    assert [r.hit for r in d.reasons][-1] is True
    # Before the deciding rule only notes: the learned models' "sure it is in scope / not an
    # emergency", recorded with their probability.
    notes = [r for r in d.reasons[:-1] if r.hit]
    assert all(r.detail.startswith("learned ") for r in notes), notes
    assert d.kind.value == "ticket" and d.priority is Priority.NORMAL


def test_decide_stops_at_first_terminal_rule() -> None:
    """A bounce decides at the bounce rule; later rules do not run."""
    d = run(make_mail(REQUEST, return_path="<>"))
    assert d.reasons[-1].rule == "bounce" and d.reasons[-1].hit
    assert "new_ticket" not in [r.rule for r in d.reasons]
    assert d.license is None


def test_plain_request_becomes_ticket_with_customer() -> None:
    """A complete, entitled request is a normal ticket carrying the license and customer."""
    d = run(make_mail(REQUEST))
    assert (d.kind.value, d.license, d.customer and d.customer.customer) == ("ticket", "11112222", "Firma a.s.")
    assert d.entitlement_end is None and d.language == "cs"


# --- automatic mail --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"auto-submitted": ("auto-replied",)},
        {"auto-submitted": ("auto-generated; owner-email=x@y.cz",)},
        {"x-autoreply": ("yes",)},
        {"x-autorespond": ("1",)},
        {"x-auto-response-suppress": ("OOF",)},
        {"precedence": ("bulk",)},
        {"precedence": ("junk",)},
        {"precedence": ("list",)},
        {"list-id": ("<x.lists.example>",)},
        {"x-ms-exchange-message-is-ndr": ("",)},
    ],
)
def test_automatic_headers_are_ignored(headers: dict[str, tuple[str, ...]]) -> None:
    """Each automatic-mail header makes even a complete request ignore_auto."""
    assert run(make_mail(REQUEST, headers=headers)).kind.value == "ignore_auto"


def test_auto_submitted_no_is_a_person() -> None:
    """Auto-Submitted: no marks mail written by a person (RFC 3834)."""
    assert run(make_mail(REQUEST, headers={"auto-submitted": ("no",)})).kind.value == "ticket"


@pytest.mark.parametrize(
    "subject",
    [
        "Automatická odpověď: Váš dotaz",
        "Automatická odpoveď: Nabídka",
        "Out of Office: support renewal",
        "Abwesenheitsnotiz: Ihre Anfrage",
        "AUTOREPLY re: licence",
        "Nedoručitelné: RE: Dotaz",
        "Přečteno: Nabídka",
    ],
)
def test_out_of_office_and_receipts_by_subject_only(subject: str) -> None:
    """Out-of-office, undeliverable and read-receipt subjects are enough without headers."""
    assert run(make_mail(REQUEST, subject=subject)).kind.value == "ignore_auto"


@pytest.mark.parametrize("sender", ["MAILER-DAEMON@mx.firma.cz", "postmaster@firma.cz", "no-reply@firma.cz"])
def test_daemon_and_noreply_senders(sender: str) -> None:
    """Mail from MAILER-DAEMON, postmaster or a no-reply address gets no answer."""
    assert run(make_mail(REQUEST, from_addr=sender.lower())).kind.value == "ignore_auto"


def test_rfc3464_report_is_a_bounce() -> None:
    """A multipart/report delivery-status is a bounce even from an ordinary sender."""
    mail = make_mail(REQUEST, content_type="multipart/report", report_type="delivery-status")
    assert run(mail).reasons[-1].rule == "bounce"


def test_read_receipt_report() -> None:
    """A disposition-notification report is a read receipt."""
    mail = make_mail("Zpráva byla přečtena.", content_type="multipart/report", report_type="disposition-notification")
    assert run(mail).reasons[-1].rule == "read_receipt"


def test_plain_bounce_recognised_by_body() -> None:
    """A bounce without report or headers is known by its delivery-failure wording."""
    mail = make_mail("Your message could not be delivered to <x@y.cz>: mailbox is full.", subject="Problem")
    assert run(mail).kind.value == "ignore_auto"


def test_newsletter_footer_without_list_headers() -> None:
    """A marketing mail with an opt-out footer but no list headers is not answered."""
    text = "Nové čipy za akční ceny!\n\nOdhlásit odběr novinek můžete zde: https://shop.example/odhlaseni"
    assert run(make_mail(text, subject="Akce")).kind.value == "ignore_auto"


@pytest.mark.parametrize(
    "mail",
    [
        make_mail(REQUEST, headers={LOOP_HEADER.lower(): ("1",)}),
        make_mail(REQUEST, from_addr="podpora@estelar.example"),
        make_mail(REQUEST, message_id="<ticket-T-2026-000001.1@estelar.example>"),
        make_mail(REQUEST, message_id="<mailbot-abc123@estelar.example>"),
    ],
)
def test_own_mail_loop_detection(mail: Mail) -> None:
    """Mail we sent ourselves (loop header, our address, our Message-ID) is ignored by own_mail."""
    d = run(mail)
    assert d.kind.value == "ignore_auto" and d.reasons[-1].rule == "own_mail"


def test_foreign_domain_ticket_message_id_is_not_ours() -> None:
    """A ticket-like Message-ID of another domain is not our own mail."""
    assert run(make_mail(REQUEST, message_id="<ticket-T-2026-000001.1@other.example>")).kind.value == "ticket"


def test_auto_reply_with_ticket_tag_is_not_followup() -> None:
    """An auto-reply carrying our ticket tag is ignored, not filed as a follow-up."""
    mail = make_mail("Jsem mimo kancelář.", subject="Re: [#T-2026-000010] Dotaz", headers={"x-autoreply": ("yes",)})
    assert run(mail).kind.value == "ignore_auto"


# --- unsubscribe -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Dobrý den, nezasílejte mi prosím už váš zpravodaj. Děkuji",
        "Prosím o vyřazení: odhlaste mě z newsletteru.",
        "Dobrý deň, odhláste nás prosím z odberu noviniek.",
        "Please take me off your newsletter list.",
        "I do not want to receive your news emails any more, please remove me.",
    ],
)
def test_unsubscribe_requests_in_three_languages(text: str) -> None:
    """Czech, Slovak and English requests to stop the newsletter are unsubscribe."""
    assert run(make_mail(text, subject="Novinky")).kind.value == "unsubscribe"


def test_unsubscribe_address_with_empty_body() -> None:
    """Any mail to the unsubscribe address is an unsubscribe, even without text."""
    mail = make_mail("", subject="", to=("novinky-odhlaseni@estelar.example",))
    assert run(mail).kind.value == "unsubscribe"


def test_clocking_out_is_not_unsubscribe() -> None:
    """'Odhlásit zaměstnance' (clock someone out) is a support question."""
    text = "Jak ručně odhlásit zaměstnance, který zapomněl při odchodu pípnout? Systém ho ukazuje jako přítomného.\nLicence 1111 2222"
    assert run(make_mail(text)).kind.value == "ticket"


def test_quoted_unsubscribe_link_is_not_a_request() -> None:
    """An unsubscribe link in the quoted newsletter does not make a question an unsubscribe."""
    text = (
        "Ve zpravodaji píšete o nové funkci schvalování, ale v menu ji nevidím, jak ji zapnout?\n"
        "lic. 11112222\n\n> Novinky 12/2026\n> Odhlásit odběr: https://estelar.example/odhlaseni\n"
    )
    assert run(make_mail(text, subject="Re: Zpravodaj")).kind.value == "ticket"


# --- tickets: follow-ups and staff ------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    ["Re: [#T-2026-000123] Dotaz", "AW: RE: [#T-2026-000123] x", "Fwd: [#T-2026-000123]", "Odp: Odp: [#T-2026-000123]", "[#T-2026-000123] doplnění"],
)
def test_subject_tag_after_prefixes(subject: str) -> None:
    """The ticket tag anywhere in the subject makes a follow-up with that reference."""
    d = run(make_mail("Děkuji, funguje to.", subject=subject))
    assert (d.kind.value, d.ticket_ref, d.license) == ("followup", "T-2026-000123", None)


def test_followup_by_references_only() -> None:
    """A References entry naming our ticket Message-ID is enough."""
    mail = make_mail("Díky, vyřešeno.", subject="Re: x", references=("<abc@x.cz>", "<ticket-T-2026-000200.3@estelar.example>"))
    assert run(mail).ticket_ref == "T-2026-000200"


def test_staff_reply_from_staff_domain() -> None:
    """With staff verification off, a staff member's mail about a ticket is a staff_reply."""
    mail = make_mail("Dobrý den, pošlete log.", subject="RE: [#T-2026-000300] x", from_addr="agent@estelar.example",
                     headers={"from": ("agent@estelar.example",)})
    cfg = CONFIG.model_copy(update={"conversation": CONFIG.conversation.model_copy(update={"verify_staff": False})})
    d = run(mail, RuleContext.from_config(cfg, Registry(), NOW, None))
    assert (d.kind.value, d.ticket_ref) == ("staff_reply", "T-2026-000300")


def test_unverified_staff_reply_is_customer_mail() -> None:
    """By default a From in the staff domain alone is not enough: suspicious, handled as a customer's mail."""
    mail = make_mail("Dobrý den, pošlete log.", subject="RE: [#T-2026-000300] x", from_addr="agent@estelar.example",
                     headers={"from": ("agent@estelar.example",)})
    d = run(mail)
    assert d.kind.value == "followup" and "suspicious_staff" in d.flags


def test_unknown_ticket_is_noted_and_mail_treated_as_new() -> None:
    """With a ticket index, an unknown reference adds unknown_ticket and the mail is decided as new."""
    d = run(make_mail(REQUEST, subject="Re: [#T-2026-999999] Sestava"), ctx(Tickets("T-2026-000001")))
    assert d.kind.value == "ticket" and "unknown_ticket" in d.flags
    hit = next(r for r in d.reasons if r.rule == "unknown_ticket")
    assert hit.hit and "T-2026-999999" in hit.detail


def test_known_ticket_with_index_is_followup() -> None:
    """With a ticket index, a known reference is a follow-up and unknown_ticket misses."""
    d = run(make_mail("Doplňuji log.", subject="Re: [#T-2026-000001] x"), ctx(Tickets("T-2026-000001")))
    assert d.kind.value == "followup"
    assert not next(r for r in d.reasons if r.rule == "unknown_ticket").hit


# --- new requests: completeness, license, entitlement ------------------------------------------------


def test_call_me_is_no_description() -> None:
    """'It does not work, call me' has no description."""
    d = run(make_mail("Dobrý den, nefunguje nám to, zavolejte mi prosím.\nlicence 11112222"))
    assert (d.kind.value, d.missing, d.license) == ("reject_incomplete", ("description",), "11112222")


def test_attachment_only_mail_is_incomplete() -> None:
    """A mail with only an attachment and the license in the subject lacks a description."""
    mail = make_mail("", subject="Licence 1111-2222", attachments=(Attachment("screen.png", "image/png", 1000),))
    assert run(mail).missing == ("description",)


def test_missing_both_sorted() -> None:
    """Without text and license, both are reported in sorted order."""
    assert run(make_mail("Ozvěte se mi.\nIČO 12345678, tel. 603 123 456", subject="Docházka")).missing == ("description", "license")


def test_unknown_license_uses_first_candidate() -> None:
    """With no candidate registered, the first candidate is reported as unknown."""
    text = REQUEST.replace("Licence: 1111 2222", "licence 9999 0000, případně licence 9999 0001")
    d = run(make_mail(text))
    assert (d.kind.value, d.license, d.customer) == ("reject_unknown_license", "99990000", None)


def test_first_registered_candidate_wins() -> None:
    """An unregistered candidate before a registered one is skipped."""
    text = REQUEST.replace("Licence: 1111 2222", "licence 9999 0000 (v programu je číslo licence 1111-2222)")
    assert run(make_mail(text)).license == "11112222"


def test_license_in_forwarded_part_counts() -> None:
    """A license found only in the forwarded mail is used."""
    text = (
        "Dobrý den, nevíme, jak nastavit zaokrouhlování příchodů na čtvrthodiny nahoru. Poradíte?\n\n"
        "---------- Forwarded message ---------\nFrom: Kolega <k@firma.cz>\nSubject: x\n\nnaše licence je 1111-2222\n"
    )
    assert run(make_mail(text, subject="Fwd: zaokrouhlování")).license == "11112222"


def test_expired_start_and_none_tier() -> None:
    """START past its six months and tier NONE are reject_expired with the customer set."""
    d = run(make_mail(REQUEST.replace("1111 2222", "3333 4444")))
    assert (d.kind.value, d.license, d.entitlement_end) == ("reject_expired", "33334444", date(2025, 7, 1))
    assert run(make_mail(REQUEST.replace("1111 2222", "5555 6666"))).kind.value == "reject_expired"


def test_recent_start_is_entitled() -> None:
    """A START activated last month is entitled and reports its end day."""
    d = run(make_mail(REQUEST.replace("1111 2222", "7777-8888")))
    assert (d.kind.value, d.entitlement_end) == ("ticket", date(2027, 4, 1))


# --- scope -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Potřebujeme napojit docházku na mzdový systém Vema, aby se hodiny přenášely každý měsíc. Nastavíte to?", "data_export"),
        ("Could you set up an automatic export of worked hours to our payroll system (DATEV)?", "data_export"),
        ("Chceli by sme export dochádzky do mzdového systému Cígler, viete nám ho nastaviť?", "data_export"),
        ("Prosíme o zaškolení tří nových personalistek v práci s programem, ideálně online.", "training"),
        ("We would like to book a training session for our new team leaders on approving absences.", "training"),
        ("Přebíráme nový závod v Brně a potřebujeme tam docházku kompletně nastavit od nuly.", "global_configuration"),
        ("We are opening a new plant and need you to set up the whole system from scratch.", "global_configuration"),
        ("Mohli byste nám vyvinout nový modul pro plánování dovolených podle našich pravidel? Prosím o nabídku.", "custom_development"),
        ("Please develop a custom report with overtime costs per cost centre and send a quote.", "custom_development"),
    ],
)
def test_out_of_scope_requests(text: str, reason: str) -> None:
    """Requests outside the support service are rejected with their reason."""
    d = run(make_mail(f"Dobrý den,\n\n{text}\n\nlicence 1111 2222\nNovák"))
    assert (d.kind.value, d.scope_reason) == ("reject_scope", reason)


@pytest.mark.parametrize(
    "text",
    [
        "Když exportuji výkaz do PDF, tabulka se nevejde na stránku. Jak zmenšit písmo?",
        "Export do Excelu vynechává sloupec Přesčasy, dřív tam byl. Kde se to nastavuje?",
        "Export do mezd Pohoda nám od aktualizace hlásí chybu neplatný formát souboru, minulý měsíc fungoval.",
        "Jak nastavit, aby se dovolená počítala od začátku roku podle nového úvazku?",
        "Jak přidat uživatelskou roli pro mistry, která smí schvalovat přesčasy jen svým lidem?",
    ],
)
def test_operational_questions_are_in_scope(text: str) -> None:
    """Printing, Excel exports, a broken existing export and settings questions are tickets."""
    assert run(make_mail(f"Dobrý den,\n\n{text}\n\nlicence 1111 2222")).kind.value == "ticket"


def test_training_in_signature_is_not_a_request() -> None:
    """A signature footer advertising training is no training request."""
    text = "Dobrý den,\njak zablokuji čip zaměstnance, který odchází, aniž bych smazal jeho docházku?\n\nDíky\nPetr\nFirma | licence 11112222\nŠkolení a implementace: www.firma.cz"
    assert run(make_mail(text)).kind.value == "ticket"


# --- emergency -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Od rána nejde spustit databáze, klient hlásí, že se nelze připojit k serveru. Nikdo nemůže pracovat.",
        "Po restartu serveru se služba ACS-line nespustí, končí chybou 1053.",
        "Dnes ráno se nikdo ze zaměstnanců nemohl pípnout, všechny terminály jsou offline.",
        "Od noci sú všetky terminály offline a nikto sa nevie pípnuť pri príchode.",
        "The ACS-line server service will not start since the night update; nobody can clock in.",
        "Since 6 am all terminals show 'connection lost' and no one can clock in at the gate.",
    ],
)
def test_outages_are_emergencies(text: str) -> None:
    """A stopped server, database or all terminals is an emergency ticket."""
    d = run(make_mail(f"Dobrý den,\n\n{text}\n\nlicence 1111 2222"))
    assert (d.kind.value, d.priority) == ("ticket", Priority.EMERGENCY)


@pytest.mark.parametrize(
    "text",
    [
        "URGENTNÍ!!! Sestava přesčasů ukazuje všem o hodinu víc, asi jsme špatně nastavili zaokrouhlení.",
        "Hoří to, zítra uzavíráme měsíc a noční příplatky se nepočítají správně.",
        "ASAP please: vacation balances are wrong after we changed the weekly hours.",
        "Terminál č. 3 ve skladu je offline, ostatní terminály fungují normálně.",
        "Jedna kolegyně se nemůže přihlásit do webového portálu, ostatní se přihlašují bez problémů.",
        "Program nejde spustit na jednom počítači v účtárně, jinde běží.",
    ],
)
def test_urgent_wording_and_partial_faults_are_normal(text: str) -> None:
    """Urgent wording, wrong results, one terminal or one user are normal tickets."""
    d = run(make_mail(f"Dobrý den,\n\n{text}\n\nlicence 1111 2222"))
    assert (d.kind.value, d.priority) == ("ticket", Priority.NORMAL)


def test_quoted_outage_does_not_make_emergency() -> None:
    """An outage mentioned only in the quoted earlier mail leaves the new request normal."""
    text = (
        "Dobrý den, v sestavě svátků chybí 17. listopad jako placený svátek. Co s tím?\n"
        "licence 1111 2222\n\n"
        "Dne 10. 11. 2026 v 8:00 Jan Novák napsal(a):\n> Server nejde spustit, nikdo se nemůže pípnout!\n"
    )
    assert run(make_mail(text, subject="Re: svátky")).priority is Priority.NORMAL


def test_outlook_quoted_block_is_not_own_text() -> None:
    """An Outlook From/Sent header block starts the quoted part."""
    parts = split_body("Nový dotaz.\n\nFrom: A <a@b.cz>\nSent: Monday\nTo: x\nSubject: y\n\nServer nejede.")
    assert parts.own == "Nový dotaz." and "Server nejede" in parts.quoted


# --- text and language -------------------------------------------------------------------------------


def test_fold_removes_diacritics_and_case() -> None:
    """fold() lower-cases, strips diacritics and collapses whitespace."""
    assert fold("  Licenční   ČÍSLO\n\tŽluťoučký ") == "licencni cislo zlutoucky"


def test_fold_of_lines_joins_the_folds_of_the_lines() -> None:
    """fold("\n".join(lines)) == join_folded(map(fold, lines)), which lets the rules reuse
    the line folds of split_body: also for blank lines, whitespace at the line ends, marks
    that fold to nothing, compatibility characters and a Greek final sigma at a line end."""
    import random

    alphabet = ["a", "Ž", "č", " ", "\t", "\xa0", "\u2003", "\u0301", "ﬁ", "Σ", "Α", "İ", "'",
                ".", "7", "\x1c", "\u2028", "\r", "ς"]
    rng = random.Random(7)
    for _ in range(3000):
        lines = ["".join(rng.choices(alphabet, k=rng.randrange(6)))
                 for _ in range(rng.randrange(1, 5))]
        assert fold("\n".join(lines)) == join_folded(fold(line) for line in lines), lines
        assert fold_lines("\n".join(lines)) == [fold(line) for line in lines], lines
    assert fold("ΑΣ\nΑ") == join_folded([fold("ΑΣ"), fold("Α")]) == "ας α"
    parts = split_body("Dobrý den,\n\n  Nejde   ULOŽIT směnu.\n\nS pozdravem\nJan Novák\n")
    assert parts.own_folded == fold(parts.own) == "dobry den, nejde ulozit smenu."
    assert parts.signature_folded == fold(parts.signature) == "s pozdravem jan novak"


def test_fold_is_the_per_character_table_whatever_the_script() -> None:
    """fold() takes shortcuts for ASCII and for text that decomposes into ASCII and Latin
    marks; the result is always the per-character table's, lower-cased, whitespace collapsed."""
    import random
    import re

    from mailbot.classify.text import _FOLD

    def by_table(text: str) -> str:
        return re.sub(r"\s+", " ", text.translate(_FOLD).lower()).strip()

    alphabet = ["a", "Z", "ž", "Č", "ů", "ß", "ǅ", "Ω", "ώ", "Σ", "й", "ё", "ﬁ", "①", "Ａ", "\u0301",
                "\u034f", "\u0483", "\u20dd", "가", "ﾊﾟ", "\xa0", "\u2003", " ", "\n", "7", "-"]
    rng = random.Random(11)
    for _ in range(5000):
        text = "".join(rng.choices(alphabet, k=rng.randrange(12)))
        assert fold(text) == by_table(text), ascii(text)
    assert fold("Žluťoučký KŮŇ") == "zlutoucky kun" and fold("ﬁle ①") == "file 1"


def test_html_only_body_is_read() -> None:
    """An HTML-only mail is read as text: license in a table, description in paragraphs."""
    html = (
        "<html><body><p>Dobrý den,</p><p>sestava docházky za říjen ukazuje u všech nulové přesčasy, "
        "přestože je odpracovali. Kde je chyba?</p><table><tr><td>Licence:</td><td>1111&nbsp;2222</td></tr></table></body></html>"
    )
    d = run(make_mail("", html=html, content_type="text/html"))
    assert (d.kind.value, d.license) == ("ticket", "11112222")


def test_english_language_detected() -> None:
    """An English request is answered in English; Slovak counts as Czech."""
    en = "Hello,\nafter the upgrade our door readers do not pair with the terminal. What should we check?\nLicense no. 11112222"
    sk = "Dobrý deň,\nako zadám do systému štátne sviatky na rok 2027, aby sa nepočítali ako absencia?\nlicenčné číslo 11112222"
    assert run(make_mail(en)).language == "en"
    assert run(make_mail(sk)).language == "cs"


def test_x_loop_naming_us_is_ignored() -> None:
    """The conventional X-Loop header with our address marks our own mail coming back."""
    d = run(make_mail(REQUEST, headers={"x-loop": ("podpora@estelar.example",)}))
    assert d.kind.value == "ignore_auto" and d.hits[0].startswith("own_mail:x-loop")


def test_feedback_report_is_ignored() -> None:
    """An RFC 5965 abuse report carries a complaint about some mail, not a request."""
    d = run(make_mail(REQUEST, content_type="multipart/report", report_type="feedback-report"))
    assert d.kind.value == "ignore_auto" and "feedback_report" in d.hits[0]
