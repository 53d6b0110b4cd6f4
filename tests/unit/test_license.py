"""License number extraction: 8 digits next to a context word, never a distractor."""

from __future__ import annotations

import pytest

from mailbot import config as config_mod
from mailbot.classify.license import extract_license_numbers

SETTINGS = config_mod.load().classify


def numbers(text: str) -> tuple[str, ...]:
    return extract_license_numbers(text, SETTINGS)


@pytest.mark.parametrize(
    "text",
    [
        "Licence: 12345678",
        "licence 1234-5678",
        "LICENCE 1234 5678",
        "Licenční číslo: 1234 5678",
        "licencni cislo 12345678",
        "č. licence 12345678",
        "Naše licence je 1234-5678.",
        "License no. 12345678",
        "License number: 1234-5678",
        "LIC 12345678",
        "lic.12345678",
        "lic. č. 1234 5678",
        "licenčné číslo: 1234-5678",
        "Licence podle smlouvy: 12345678",
        "Firma s.r.o. | licence 12345678",
    ],
)
def test_context_word_and_number_forms(text: str) -> None:
    """Every written form of the context word and of the number yields the same license."""
    assert numbers(text) == ("12345678",)


@pytest.mark.parametrize(
    "text",
    [
        "licence 123456789",
        "licence 1234567",
        "Licence 1234 56789",
        "licence 12345678-9",
        "IČO: 12345678",
        "DIČ: CZ12345678",
        "tel. +420 603 222 111",
        "mobil 603123456",
        "faktura č. 12345678",
        "invoice no. 12345678",
        "k objednávce 12345678",
        "č. účtu 12345678/0800",
        "Bankovní spojení: 123456789/0800",
        "sync 20261124 skipped",
        "PSČ 760 01",
        "12345678",
    ],
)
def test_distractors_are_not_licenses(text: str) -> None:
    """IČO, DIČ, phones, invoices, orders, accounts, dates and bare or odd-length numbers are no license."""
    assert numbers(text) == ()


def test_distractor_word_between_context_and_number() -> None:
    """A number separated from "licence" by an IČO label is the IČO, not the license."""
    assert numbers("licence a IČO 12345678") == ()


def test_ico_before_the_license_is_skipped() -> None:
    """An IČO written just before the license line is not a candidate; the license is."""
    assert numbers("Firma, IČO 72045117\nLicence: 4509 8812") == ("45098812",)


def test_several_candidates_keep_order_and_are_deduplicated() -> None:
    """Candidates come in text order, each once, whatever their written form."""
    text = "licence 1111 2222, jinak číslo licence 33334444; znovu lic. 1111-2222"
    assert numbers(text) == ("11112222", "33334444")


def test_english_and_slovak_sentences() -> None:
    """Wording in running English or Slovak text still finds the number."""
    assert numbers("Our license number is 8765-4321, thanks") == ("87654321",)
    assert numbers("Dobrý deň, naše licenčné číslo je 8765 4321.") == ("87654321",)


def test_number_too_far_from_the_context_word() -> None:
    """A number far beyond the context window is not tied to the word."""
    text = "licence " + "x" * 80 + " 12345678"
    assert numbers(text) == ()


def test_word_containing_lic_is_not_context() -> None:
    """"lic" inside another word (public, policie) is no context word."""
    assert numbers("public 12345678") == ()
    assert numbers("policie 12345678") == ()


def test_another_number_in_the_license_sentence_is_a_candidate() -> None:
    """"Licence 4410 8832 on the old contract, but now 52673019 applies", "licence 1111 2222
    or 3333 4444": further numbers in the license's own sentence are candidates too (the
    registry says which is theirs); not past a distractor, not in the next sentence."""
    assert numbers("Licenční číslo 4410 8832 máme na staré smlouvě z roku 2015, ale prý teď "
                   "platí 52673019, tak nevím které.") == ("44108832", "52673019")
    assert numbers("licence 1111 2222 nebo 3333 4444") == ("11112222", "33334444")
    assert numbers("Licence 1111 2222, objednávka 33334444") == ("11112222",)
    assert numbers("Licence 1111 2222. Volejte na 33334444 po celý den.") == ("11112222",)
    assert numbers("Licence 1111 2222 " + "x" * 200 + " 33334444") == ("11112222",)


def test_a_year_in_the_gap_and_a_phone_on_the_next_signature_line() -> None:
    """"License number (from the 2019 contract) is 28846502": a year between the word and
    the number is no other number; "lic. č. 45091876" with the phone on the next line,
    which the fold joins to it, is the license. A 4+4 number still never runs on."""
    assert numbers("Our license number (from the 2019 contract) is 28846502.") == ("28846502",)
    assert numbers("Majster\nDrevoprodukt\nlic.c. 45091876\n0905 318 442") == ("45091876",)
    assert numbers("licence 2019, objednávka 12345678") == ()
    assert numbers("licence 4509 1876 0905 318") == ()
    assert numbers("licence 12345678-9") == ()


def test_a_place_between_the_word_and_the_number() -> None:
    """"Licence pro Telč je 40718271" (the license for the Telč site): a place named in the
    gap, even one whose name begins like "tel.", is no phone label; a phone label is."""
    assert numbers("Kdybys to psal na Estelar, licence pro Telč je 40718271.") == ("40718271",)
    assert numbers("The license for Telford is 4071-8271.") == ("40718271",)
    for text in ("licence a tel. 40718271", "licence, telefon 40718271",
                 "license, telephone 40718271", "licence, Tel: 40718271"):
        assert numbers(text) == (), text
