"""The mail's structure before its words: forwarded mail (inline or attached), what a
description is, and which of several licenses wins. Each mail is worded here, through the
real parser (raw bytes in), not taken from the labelled sets."""

from __future__ import annotations

from datetime import date, datetime
from email.message import EmailMessage
from email.policy import SMTP
from zoneinfo import ZoneInfo

from mailbot import config as config_mod
from mailbot.classify.decide import decide
from mailbot.classify.facts import MailFacts
from mailbot.classify.license import without_license_numbers
from mailbot.classify.rules import RuleContext
from mailbot.domain import Decision, LicenseRecord, Priority, Tier
from mailbot.ingest.parse import parse
from mailbot.registry import DictRegistry

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=ZoneInfo("Europe/Prague"))
CONFIG = config_mod.load()


def record(number: str, tier: Tier = Tier.HOTLINE, end: date | None = None) -> LicenseRecord:
    return LicenseRecord(number, f"Firma {number}", "mlekarna.example", date(2025, 1, 1), tier, end)


REGISTRY = DictRegistry({
    "31415926": record("31415926"),
    "27182818": record("27182818"),
    "16180339": record("16180339", Tier.START, date(2026, 7, 1)),  # START over
})


def decided(raw: bytes, registry: DictRegistry = REGISTRY) -> Decision:
    return decide(parse(raw), RuleContext.from_config(CONFIG, registry, NOW, None))


def plain(body: str, subject: str = "Dotaz",
          sender: str = "Ivana Kratochvílová <kratochvilova@mlekarna.example>") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "podpora@estelar.example"
    msg["Subject"] = subject
    msg["Message-ID"] = "<s1@mlekarna.example>"
    msg.set_content(body)
    return msg.as_bytes(policy=SMTP)


FORWARDED_OUTAGE = """\
Od: Radek Suchý <suchy@mlekarna.example>
Odesláno: úterý 24. listopadu 2026 5:58
Komu: Ivana Kratochvílová <kratochvilova@mlekarna.example>
Předmět: brány

Ivano, ráno nikdo nemůže projít turnikety, všechny terminály ukazují offline a
server docházky nejde spustit. Ranní směna čeká venku.
Radek
"""


def test_emergency_only_in_an_inline_forward_counts() -> None:
    """A Gmail-style forward (separator line, then header lines) is the customer's request:
    its outage makes the ticket an emergency, although the top text only gives the license."""
    raw = plain("Dobrý den,\nviz níže. Licence 3141-5926\nIvana\n\n"
                "---------- Forwarded message ---------\n" + FORWARDED_OUTAGE, "Fwd: brány")
    d = decided(raw)
    assert (d.kind.value, d.license, d.priority) == ("ticket", "31415926", Priority.EMERGENCY)


def test_forwarded_outage_the_sender_says_is_over_is_no_emergency() -> None:
    """The sender's own newer words win over the forwarded report."""
    raw = plain("Dobrý den,\nposílám starší zprávu kolegy; to se serverem je už vyřešené, "
                "server zase běží. Teď nám ale v sestavě přesčasů chybí sobotní směny.\n"
                "Licence 3141-5926\n\n-----Původní zpráva-----\n" + FORWARDED_OUTAGE,
                "FW: brány")
    d = decided(raw)
    assert (d.kind.value, d.priority) == ("ticket", Priority.NORMAL)


def test_license_and_outage_only_in_an_attached_message() -> None:
    """A mail forwarded as an attachment (message/rfc822) is read: its license and its
    outage count, as if it were inline."""
    inner = EmailMessage()
    inner["From"] = "suchy@mlekarna.example"
    inner["Subject"] = "server"
    inner.set_content("Ivano, databázový server po restartu nenaběhne, nikdo se nemůže "
                      "přihlásit k docházce.\nLic. č. 2718-2818\n")
    outer = EmailMessage()
    outer["From"] = "kratochvilova@mlekarna.example"
    outer["To"] = "podpora@estelar.example"
    outer["Subject"] = "FW: server"
    outer["Message-ID"] = "<s2@mlekarna.example>"
    outer.set_content("Dobrý den, v příloze zpráva od našeho správce. Ozvěte se prosím.\n")
    outer.add_attachment(inner)
    mail = parse(outer.as_bytes(policy=SMTP))
    assert "nenaběhne" in mail.attached_text and "nenaběhne" not in mail.text
    d = decide(mail, RuleContext.from_config(CONFIG, REGISTRY, NOW, None))
    assert (d.kind.value, d.license, d.priority) == ("ticket", "27182818", Priority.EMERGENCY)


def test_attached_text_is_capped() -> None:
    from mailbot.ingest.parse import ATTACHED_TEXT_LIMIT

    inner = EmailMessage()
    inner.set_content("slovo " * 40_000)
    outer = EmailMessage()
    outer["From"] = "a@b.example"
    outer.set_content("viz příloha")
    outer.add_attachment(inner)
    assert len(parse(outer.as_bytes(policy=SMTP)).attached_text) <= ATTACHED_TEXT_LIMIT


def test_the_registry_order_decides_between_registered_candidates() -> None:
    """Two registered licenses: the first in the registry wins, not the first mentioned
    (here the one mentioned first has ended, which must not reject the request)."""
    raw = plain("Dobrý den, v kalendáři svátků na rok 2027 chybí Velký pátek, přidáme ho "
                "ručně? Licence 1618-0339 (starý závod), licence 3141-5926.")
    d = decided(raw)
    assert (d.kind.value, d.license) == ("ticket", "31415926")
    reordered = DictRegistry({n: REGISTRY.get(n) for n in ("16180339", "31415926")  # type: ignore[misc]
                              })
    assert decided(raw, reordered).kind.value == "reject_expired"


def test_a_call_back_wish_is_no_description() -> None:
    for body in (
        "Dobrý den, prosím o zavolání zítra mezi 9 a 11 hodinou, potřebovala bych s vámi "
        "něco probrat ohledně docházky. Licence 3141-5926",
        "Dobrý deň, prosím o spätné zavolanie dnes po 13:00 na číslo 0905 111 222, "
        "ide o dochádzku. Licenčné číslo 3141-5926",
        "Hello, we have a problem with the attendance system, please call me this "
        "afternoon, it is important. License no. 3141 5926",
    ):
        d = decided(plain(body, "Prosba"))
        assert (d.kind.value, d.missing) == ("reject_incomplete", ("description",)), body


def test_a_named_attachment_is_no_description() -> None:
    for subject, body in (("chyba", "Dobrý den, posílám screenshot v příloze.\nLicence 3141-5926"),
                          ("log", "Zdravím, v příloze posílám logy ze serveru. LIC 3141-5926"),
                          ("error", "Hi, see the attached picture. License 3141-5926")):
        d = decided(plain(body, subject))
        assert (d.kind.value, d.missing) == ("reject_incomplete", ("description",)), body


def test_a_short_real_description_still_counts() -> None:
    """The stopwords must not eat a description: a short but real problem is a ticket."""
    d = decided(plain("Nejde vytisknout měsíční sestavu docházky, hlásí chybu 17. "
                      "Licence 3141-5926", "Tisk"))
    assert d.kind.value == "ticket"


def test_stop_sending_in_a_reply_to_the_newsletter_unsubscribes() -> None:
    """"Don't send me this any more" names what to stop only through the subject of the
    newsletter it answers; the quoted newsletter (licenses, training, exports) is not read."""
    raw = plain("Už mi to prosím neposílejte.\n\n> Estelar novinky: verze 6.4, školení, "
                "exporty do mezd\n> Licence a podpora HOTLINE", "Re: Estelar novinky – prosinec")
    assert decided(raw).kind.value == "unsubscribe"
    # Not a reply: the same words in a new request are about something else.
    request = plain("Neposílejte mi prosím faktury poštou, ale e-mailem. Licence 3141-5926",
                    "Estelar novinky a faktury")
    assert decided(request).kind.value != "unsubscribe"


def test_absence_notice_without_headers_is_automatic_mail() -> None:
    """An out-of-office text with a ticket tag and a license, but no Auto-Submitted header:
    never answered, never a follow-up."""
    raw = plain("Dobrý den, do pátku 4. 12. jsem mimo kancelář a poštu nečtu. V naléhavých "
                "věcech volejte kolegyni na 555 123 456.\nLicence 3141-5926",
                "Nepřítomnost: Re: [#T-2026-000123] Export mezd")
    assert decided(raw).kind.value == "ignore_auto"
    # A request that mentions an absence is longer and stays a request.
    long = plain("Dobrý den, jsem mimo kancelář, ale kolegové hlásí, že po včerejší "
                 "aktualizaci se v měsíčním přehledu nezobrazují přesčasy u dvou středisek, "
                 "ačkoli v denním přehledu je vidí. Zkoušeli jsme přepočítat měsíc i znovu "
                 "přihlásit, bez změny. Kde může být chyba v nastavení středisek? Děkuji, "
                 "Licence 3141-5926 " + "a ještě podrobnosti k tomu " * 8, "Přesčasy")
    assert decided(long).kind.value == "ticket"


def test_absence_notice_with_a_date_in_its_opening() -> None:
    """"do 2. 12." splits into pieces that are no sentences; the notice is still read from
    its opening, and it is automatic mail however it is worded."""
    raw = plain("Dobrý den,\naž do 4. 12. čerpám dovolenou a poštu nečtu. Zastupuje mě "
                "kolega Hrubý.\nIvana", "Re: Estelar novinky")
    assert decided(raw).kind.value == "ignore_auto"


def test_unsubscribe_said_freely() -> None:
    for body in ("Dobrý den, přestaňte mi už prosím posílat reklamní e-maily.\nDěkuji",
                 "Dobrý deň, o vaše novinky už nemám záujem.\nĎakujem",
                 "Hello, please take my address off your newsletter list.\nThanks"):
        assert decided(plain(body, "Pošta")).kind.value == "unsubscribe", body


def test_give_me_a_call_is_no_description() -> None:
    d = decided(plain("Hi, we have an issue, could you give me a call when you get a chance?\n"
                      "Licence 3141-5926\nIvana", "Issue"))
    assert (d.kind.value, d.missing) == ("reject_incomplete", ("description",))


def test_license_mentions_are_no_words_of_the_request() -> None:
    """"licence 3141 5926" says nothing about the problem: the sentences the rules and the
    second opinion read leave it out, so a learnt anchor "our license is 12345678" cannot
    make another request that gives its license look out of scope."""
    assert without_license_numbers("licencni cislo mame 40127733.", CONFIG.classify) == ""
    assert (without_license_numbers("ico 12345678, licence 3141-5926, tel.", CONFIG.classify)
            == "ico 12345678, , tel.")
    # "licenční služba" without a number is a word of the problem and stays.
    assert without_license_numbers("licencni sluzba nebezi", CONFIG.classify) == "licencni sluzba nebezi"
    model = CONFIG.classify.model.model_copy(update={"anchors": {
        "data_export": ("licencni cislo mame 40127733",), "in_scope": ("jak opravit sestavu",)}})
    settings = CONFIG.classify.model_copy(update={"model": model})
    facts = MailFacts(parse(plain("Dobrý den,\nsestava přesčasů ukazuje nuly.\n"
                                  "Licenční číslo máme 3141-5926.\nIvana")), settings)
    assert not any("3141" in s or "licen" in s for s in facts.request_sentences)
    assert "data_export" not in facts.opinion(facts.request_sentences)


def test_an_out_of_scope_anchor_needs_a_sentence_that_asks() -> None:
    """A sentence that only states something ("both heads have the same role") shares the
    topic of an out-of-scope anchor but asks for no work: `scope_signals` keep it out."""
    model = CONFIG.classify.model.model_copy(update={"anchors": {
        "training": ("skoleni pro vedouci stredisek",), "in_scope": ("jak opravit sestavu",)}})
    settings = CONFIG.classify.model_copy(update={"model": model})
    stated = MailFacts(parse(plain("Dobrý den,\nOba vedoucí mají roli vedoucí středisek.\n\n"
                                   "Žádosti o dovolenou chodí jen jednomu.\nIvana")), settings)
    assert "training" not in stated.opinion(stated.request_sentences)
    asked = MailFacts(parse(plain("Dobrý den,\nprosím o školení pro vedoucí středisek.\nIvana")),
                      settings)
    assert "training" in asked.opinion(asked.request_sentences)
    no_signals = settings.model_copy(update={"model": model.model_copy(
        update={"scope_signals": ()})})
    bare = MailFacts(parse(plain("Dobrý den,\nOba vedoucí mají roli vedoucí středisek.\n\n"
                                 "Žádosti o dovolenou chodí jen jednomu.\nIvana")), no_signals)
    assert "training" in bare.opinion(bare.request_sentences)


def test_sentences_do_not_end_at_dates_titles_and_abbreviations() -> None:
    """A dot ends a sentence only where one ends: not in "15. 11. 2026", "č. 5",
    "Ing. Novák", "J. Dvořák" or "tzn. že"; it does before a capital or a new number."""
    from mailbot.classify.text import sentences
    assert sentences("Od 15. 11. 2026 nejde server. Nikdo se nepřihlásí!") == (
        "od 15. 11. 2026 nejde server.", "nikdo se neprihlasi!")
    assert sentences("Od 3. listopadu padá export, tzn. že nic. Díky") == (
        "od 3. listopadu pada export, tzn. ze nic.", "diky")
    assert sentences("Píše Ing. Jan Novák a J. Dvořák z údržby. Terminál č. 5 nejde.") == (
        "pise ing. jan novak a j. dvorak z udrzby.", "terminal c. 5 nejde.")
    assert sentences("Máme 3 terminály. 2 z nich nejdou.") == ("mame 3 terminaly.", "2 z nich nejdou.")
    assert sentences("server nejde. nikdo se neprihlasi") == ("server nejde.", "nikdo se neprihlasi")
    assert sentences("Jan. Novák\n\n- první bod.\n- druhý") == (
        "jan.", "novak", "- prvni bod.", "- druhy")


def test_a_neighbouring_import_and_payroll_in_a_fault_report_are_no_export() -> None:
    """Entries imported twice that doubled the overtime in payroll are a fault of data
    already there; the pair of sentences naming "payroll" and "imported" asks for no export."""
    decision = decided(plain(
        "Hi,\nthe October payroll closes today and three engineers show double the overtime "
        "(e.g. P. Malý 20 h instead of 10 h).\nI think I imported their call-outs from the rota "
        "after the foreman had typed them in, so they count twice.\n\nHow do I remove the extra "
        "entries and recalculate October?\nLicense 3141-5926\nMark", "Overtime doubled"))
    assert decision.kind.value == "ticket", decision.reasons


def outlook(paragraphs: list[str], subject: str, attachment: tuple[str, bytes] | None = None
            ) -> bytes:
    """An Outlook-style mail: HTML only, one <p class=MsoNormal> per line and an empty
    paragraph between blocks, so its text has a blank line between every two lines."""
    msg = EmailMessage()
    msg["From"] = "Pavla Nováková <novakova@mlekarna.example>"
    msg["To"] = "podpora@estelar.example"
    msg["Subject"] = subject
    msg["Message-ID"] = "<s3@mlekarna.example>"
    body = "".join(f"<p class=MsoNormal>{p or '<o:p>&nbsp;</o:p>'}<o:p></o:p></p>\n"
                   for p in paragraphs)
    msg.set_content(f"<html><body><div class=WordSection1>\n{body}</div></body></html>",
                    subtype="html", charset="windows-1250")
    if attachment is not None:
        msg.add_attachment(attachment[1], maintype="application", subtype="pdf",
                           filename=attachment[0])
    return msg.as_bytes(policy=SMTP)


OUTLOOK_SIGNATURE = ["S pozdravem", "", "Pavla Nováková", "", "asistentka výrobního ředitele", "",
                     "Mlékárna Horní Lomnice a.s.", "", "Průmyslová 8, 512 51 Horní Lomnice", "",
                     "IČO 45612378 | tel. 481 555 120 | mob. 731 442 019"]


def test_see_the_attachment_above_a_long_outlook_signature_is_no_description() -> None:
    """An HTML body has a blank line between every two lines: the signature below the
    closing is found among the last ten lines of text, not the last ten lines, and a
    named attachment ("viz přiložený soubor") describes nothing."""
    raw = outlook(["Dobrý den,", "", "viz přiložený soubor.", "", "Licence 3141-5926", "",
                   *OUTLOOK_SIGNATURE], "problém", ("chyba.pdf", b"%PDF-1.4 ..."))
    d = decided(raw)
    assert (d.kind.value, d.missing) == ("reject_incomplete", ("description",)), d.reasons
    # The same mail with a real sentence is a ticket.
    raw = outlook(["Dobrý den,", "", "v měsíční sestavě se od listopadu nepočítají noční "
                   "příplatky, viz přiložený soubor.", "", "Licence 3141-5926", "",
                   *OUTLOOK_SIGNATURE], "problém", ("chyba.pdf", b"%PDF-1.4 ..."))
    assert decided(raw).kind.value == "ticket"


def test_a_body_that_is_only_a_signature_describes_nothing() -> None:
    """Nothing written above the signature (a name, a role, the organization, contacts and
    the license): no description, in an Outlook HTML body as in plain text."""
    signature = ["Bc. Tomáš Dvořáček", "vedoucí provozu a správce docházkového systému",
                 "Sociální služby města Horní Lomnice – domov pro seniory, úsek provozu",
                 "Lomnická 1140/3, 512 51 Horní Lomnice", "IČO: 45612378, DIČ: CZ45612378",
                 "tel.: 481 555 120, e-mail: dvoracek@mlekarna.example",
                 "Licenční číslo: 3141 5926"]
    html = outlook([p for line in signature for p in (line, "")], "Docházka")
    text = plain("\n".join(signature) + "\n", "Docházka")
    for raw in (html, text):
        d = decided(raw)
        assert (d.kind.value, d.missing) == ("reject_incomplete", ("description",)), d.reasons
    # A request above the same signature is still a request.
    d = decided(plain("Dobrý den,\nod pondělí se v přehledu nezobrazují noční směny "
                      "úseku provozu.\n\n" + "\n".join(signature) + "\n", "Docházka"))
    assert d.kind.value == "ticket"


def test_the_subject_of_a_quoted_reply_is_the_earlier_mails_topic() -> None:
    """A reply keeps the subject of the mail it answers, here our sales offer for a payroll
    export: that subject, like the quoted offer below, is not the customer's request. Their
    new words ask about something else (a report), which is a ticket."""
    body = ("Dobrý den,\nza nabídku děkujeme, k propojení se vyjádříme po poradě vedení.\n\n"
            "Mám ale jiný dotaz: v sestavě přesčasů za říjen chybí dva zaměstnanci ze skladu, "
            "i když mají odpracované soboty. Čím to může být? Licence 3141-5926.\n\nIvana\n\n"
            "Dne 12. 11. 2026 v 9:30 Petr Malý <maly@estelar.example> napsal(a):\n"
            "> Dobrý den, propojení docházky s mzdovým systémem KS mzdy nastavujeme jako "
            "samostatnou zakázku,\n> cenovou nabídku posílám v příloze.\n")
    d = decided(plain(body, "Re: Propojení docházky s KS mzdy – nabídka"))
    assert (d.kind.value, d.priority) == ("ticket", Priority.NORMAL), d.reasons
    # A new mail with that subject is the customer's own topic: a request for the export.
    d = decided(plain("Dobrý den, máme zájem, pošlete nám prosím cenovou nabídku. "
                      "Licence 3141-5926.\nIvana", "Propojení docházky s KS mzdy – nabídka"))
    assert (d.kind.value, d.scope_reason) == ("reject_scope", "data_export"), d.reasons


SIGNED = ("S pozdravem\nIvana Kratochvílová\nmzdová účetní\nMlékárna Horní Lomnice a.s.\n"
          "Průmyslová 8, 512 51 Horní Lomnice\ntel. 481 555 120")
FOOTERS = (
    "Mlékárna Horní Lomnice a.s., IČO 45612378, zapsaná v obchodním rejstříku u Krajského "
    "soudu v Hradci Králové, oddíl B, vložka 2211.\nObsah této zprávy je důvěrný a patří jen "
    "jejímu adresátovi; obdrželi-li jste ji omylem, dejte prosím vědět odesílateli a zprávu "
    "odstraňte. Pro zaměstnance pořádáme školení a vyvíjíme aplikace na zakázku.",
    "Mliekáreň Horná Lomnica a.s., zapísaná v Obchodnom registri Okresného súdu Žilina, "
    "oddiel Sa, vložka 5521/L.\nTáto správa je dôverná. Ak ste ju dostali omylom, "
    "upovedomte prosím odosielateľa a správu zmažte. V prípade havárie výroby volajte "
    "dispečing.",
    "This message and its attachments may contain confidential information meant only for\n"
    "the named addressee. If it reached you in error, please notify the sender and delete it.\n"
    "Our training centre also offers workshops and custom development for partners.",
)


def test_a_legal_footer_below_the_signature_is_not_the_customers_text() -> None:
    """A confidentiality or company-register footer, its own paragraph below the signature,
    is boilerplate: a body that is only a closing, a signature and such a footer describes
    nothing, and what the footer says (training, development, an outage line) decides
    nothing. Czech, Slovak and English footers."""
    for footer in FOOTERS:
        d = decided(plain(f"{SIGNED}\n\n{footer}\n", "Docházka"))
        assert (d.kind.value, d.missing) == ("reject_incomplete", ("description", "license")), (
            footer, d.reasons)
        d = decided(plain("Dobrý den,\nv sestavě přesčasů za listopad chybí dva řidiči ze "
                          f"skladu, kde to mám opravit?\nLicence 3141-5926\n\n{SIGNED}\n\n"
                          f"{footer}\n", "Přesčasy"))
        assert (d.kind.value, d.priority) == ("ticket", Priority.NORMAL), (footer, d.reasons)
    # The customer's own last paragraph that says something was deleted by mistake stays.
    d = decided(plain("Dobrý den,\nv kalendáři jsme omylem smazali svátek 28. 10.\n\n"
                      "Obdrželi jsme od kolegyně omylem starou verzi návodu, jak ho vrátit "
                      "zpět?\nLicence 3141-5926", "Svátek"))
    assert d.kind.value == "ticket", d.reasons


def test_the_senders_own_name_opens_the_signature() -> None:
    """A line that is the sender's own name (the From display name, in either order, titles
    aside) opens the signature, also when what follows is no legal footer but a
    department's own line about what it offers ("training and development", "in an
    emergency call …"): that is not the customer's request."""
    body = ("Dobrý den,\nv přehledu absencí se u dvou zaměstnanců ze skladu nezobrazuje "
            "čerpané sick day, přestože je mají v kalendáři. Kde mám hledat chybu?\n\n"
            "Licence 3141-5926\n\n{name}\nvedoucí personálního oddělení, vzdělávání a rozvoje "
            "lidí\nMlékárna Horní Lomnice a.s.\nlinka 214\n\nPersonální oddělení pořádá pro "
            "zaměstnance školení a zajišťuje vývoj interních aplikací.\nPři havárii výroby "
            "volejte nonstop dispečink na lince 200.\n")
    for name, sender in (
        ("Ivana Kratochvílová", "Ivana Kratochvílová <kratochvilova@mlekarna.example>"),
        ("Mgr. Ivana Kratochvílová", "Kratochvílová Ivana <kratochvilova@mlekarna.example>"),
    ):
        d = decided(plain(body.format(name=name), "Absence", sender))
        assert (d.kind.value, d.priority) == ("ticket", Priority.NORMAL), (name, d.reasons)
    # Another person's name, or the sender's name in a sentence, opens nothing.
    d = decided(plain("Dobrý den,\nprosím o školení pro naše nové mistry, týká se:\n"
                      "Petr Malý\nJana Horká\n\nIvana Kratochvílová je u nás správce "
                      "docházky. Licence 3141-5926\n", "Školení"))
    assert (d.kind.value, d.scope_reason) == ("reject_scope", "training"), d.reasons


def test_a_session_to_teach_new_people_the_program_is_training() -> None:
    """Training said without the word: a course, lesson or session for the customer's new
    people on how to work with the program, or someone coming to show the new ones how it
    works (English, Czech, Slovak). "None of them has ever seen it" is no outage."""
    for subject, body in (
        ("New planners", "Hi, would you be able to hold a short course for our two shift "
                         "planners on how to work with the attendance program? They only "
                         "joined last month. Remote is fine. License 3141-5926"),
        ("Noví skladníci", "Dobrý den, mohl by k nám na dopoledne přijet někdo od vás a ukázat "
                           "novým skladníkům, jak se v docházce zapisují dovolené a opravy? "
                           "Licence 3141-5926"),
        ("Noví majstri", "Dobrý deň, potrebovali by sme lekciu pre nových majstrov, aby sa "
                         "naučili pracovať s dochádzkou, nikto z nich ju nikdy nepoužíval. "
                         "Licencia 3141-5926"),
    ):
        d = decided(plain(body, subject))
        assert (d.kind.value, d.scope_reason) == ("reject_scope", "training"), (body, d.reasons)
    # A fault a new colleague has is a ticket.
    d = decided(plain("Dobrý den, novému kolegovi ze skladu se v přehledu nezobrazují "
                      "příchody z terminálu u vrátnice. Licence 3141-5926", "Příchody"))
    assert (d.kind.value, d.priority) == ("ticket", Priority.NORMAL), d.reasons


def test_a_new_site_built_from_zero_is_global_configuration() -> None:
    """The whole system built for a new site from zero (or from scratch) is a setup."""
    for body in (
        "Dobrý den, v březnu spouštíme nový sklad v Hranicích. Potřebovali bychom tam docházku "
        "vybudovat od nuly, terminály, směny i pravidla. Zvládli byste to za nás? "
        "Licence 3141-5926",
        "Hello, we are opening a depot in Brno in spring and need the attendance system built "
        "from scratch there. Could your team do that for us? License 3141-5926",
    ):
        d = decided(plain(body, "Nový sklad"))
        assert (d.kind.value, d.scope_reason) == ("reject_scope", "global_configuration"), (
            body, d.reasons)


def test_an_outage_the_sender_says_is_over_is_no_emergency() -> None:
    """Tense in the customer's own text: an outage told in the past that has been over since
    (a restart fixed it) is a normal ticket; one that still goes on is an emergency."""
    for body in (
        "Dobrý den, ve čtvrtek ráno na hodinu vypadl server docházky a nikdo se nemohl "
        "přihlásit. Kolega ho restartoval a od té doby běží bez potíží. Můžete zjistit, "
        "co se stalo? Licence 3141-5926",
        "Hello, yesterday evening the attendance server went down and nobody could clock in. "
        "After a reboot it has been fine ever since. Could you look at the logs to find out "
        "why? License 3141-5926",
    ):
        d = decided(plain(body, "Výpadek"))
        assert (d.kind.value, d.priority) == ("ticket", Priority.NORMAL), (body, d.reasons)
    d = decided(plain("Dobrý den, od rána nejde server docházky. Restartovali jsme ho, ale "
                      "pořád nikdo nemůže pipnout. Licence 3141-5926", "Výpadek"))
    assert (d.kind.value, d.priority) == ("ticket", Priority.EMERGENCY), d.reasons


def test_other_systems_working_do_not_make_an_outage_partial() -> None:
    """"The network and other applications work" says the outage is ours alone, not that
    only a part of our system is down: every terminal offline stays an emergency."""
    d = decided(plain("Dobrý deň, od rána nefunguje ani jeden vstupný terminál, všetky hlásia "
                      "odpojené. Zamestnanci sa nemôžu zaevidovať. Internet je v poriadku a "
                      "ostatné aplikácie fungujú normálne. Licencia 3141-5926", "Terminály"))
    assert (d.kind.value, d.priority) == ("ticket", Priority.EMERGENCY), d.reasons


def test_a_terminals_clock_synchronisation_is_no_export() -> None:
    """A terminal whose clock runs ahead although time synchronisation is on is a fault,
    even where the payroll clerk, who gets wrong overtime from it, is named beside it."""
    d = decided(plain("Dobrý den, terminál v dílně se každý týden předbíhá o pár minut, i "
                      "když má zapnutou synchronizaci se serverem. Mzdová účetní si pak "
                      "stěžuje na přesčasy. Proč se synchronizace u toho terminálu neuplatní? "
                      "Licence 3141-5926", "Čas terminálu"))
    assert (d.kind.value, d.priority) == ("ticket", Priority.NORMAL), d.reasons


def test_a_reply_to_the_newsletter_asking_for_a_call_describes_nothing() -> None:
    """A reply keeps the newsletter's subject: that, like the quoted newsletter, is not the
    customer's description; "call me, we have trouble with it" describes nothing."""
    body = ("Ozvěte se mi prosím, máme s tím potíže.\nJana\n\n"
            "Dne 2. 12. 2026 v 8:00 ESTELAR novinky <novinky@estelar.example> napsal(a):\n"
            "> Nová verze přehledu přesčasů, zimní čas na terminálech\n"
            "> a termíny školení správců systému.\n")
    d = decided(plain(body, "Re: ESTELAR novinky – prosinec 2026"))
    assert (d.kind.value, d.missing) == ("reject_incomplete", ("description", "license")), (
        d.reasons)


def test_readers_refusing_every_badge_are_an_emergency_by_the_rules_alone() -> None:
    """A whole shift kept out because the readers accept no badge, or every reader shows
    red, is an outage, with the rules alone too; a restart that changed nothing ends none."""
    rules_alone = CONFIG.classify.model_copy(update={
        "model": CONFIG.classify.model.model_copy(update={"enabled": False})})
    config = CONFIG.model_copy(update={"classify": rules_alone})
    for body in (
        "Hello, since 5:30 our entire night shift is stuck at the gate: the turnstile readers "
        "will not accept any card. We restarted the server, nothing changed. License 3141-5926",
        "Hello, since this morning every reader at the loading dock flashes red and people "
        "are queueing outside. License 3141-5926",
    ):
        d = decide(parse(plain(body, "Gate")), RuleContext.from_config(config, REGISTRY, NOW, None))
        assert (d.kind.value, d.priority) == ("ticket", Priority.EMERGENCY), (body, d.reasons)
