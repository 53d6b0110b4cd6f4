"""The second opinion (anchor sentences by word stems) where the phrase rules are silent, and
the tense and negation checks of the scope rules. Every request is worded here."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from zoneinfo import ZoneInfo

from mailbot import config as config_mod
from mailbot.classify.decide import decide
from mailbot.classify.opinion import AnchorModel, Evidence, features, weigh
from mailbot.classify.rules import RuleContext
from mailbot.domain import Decision, LicenseRecord, Mail, Priority, Tier
from mailbot.registry import DictRegistry

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=ZoneInfo("Europe/Prague"))
CONFIG = config_mod.load()
REGISTRY = DictRegistry({"31415926": LicenseRecord(
    "31415926", "Mlékárna", "mlekarna.example", date(2025, 1, 1), Tier.HOTLINE, None)})


def request(text: str, subject: str = "Dotaz", config: config_mod.Config = CONFIG) -> Decision:
    mail = Mail(message_id="<o@mlekarna.example>", from_addr="eva@mlekarna.example",
                from_name="", to=("podpora@estelar.example",), cc=(), subject=subject,
                date=None, in_reply_to=(), references=(), return_path=None, headers={},
                content_type="text/plain", report_type="", text=text + "\nLicence 3141-5926\n",
                html="")
    return decide(mail, RuleContext.from_config(config, REGISTRY, NOW, None))


def without_model() -> config_mod.Config:
    classify = CONFIG.classify.model_copy(
        update={"model": CONFIG.classify.model.model_copy(update={"enabled": False})})
    return CONFIG.model_copy(update={"classify": classify})


def test_negation_is_a_feature_of_its_own() -> None:
    """"it works" and "it does not work" share only the negation marker's absence."""
    assert "ne" in features("terminal nefunguje") and "ne" not in features("terminal funguje")
    assert not set(features("funguje")) & set(features("nefunguje"))
    # Inflected forms meet in one stem.
    assert set(features("nastavit")) & set(features("nastavili"))


def test_anchor_model_is_deterministic_and_names_its_evidence() -> None:
    model = AnchorModel({"training": ("proskolit nove vedouci",),
                         "in_scope": ("jak opravit sestavu",)})
    a = model.per_label(("potrebujeme proskolit nove mistry",))
    assert a == model.per_label(("potrebujeme proskolit nove mistry",))
    sure = weigh(a, ("training",), "in_scope", 0.3, 0.1)
    assert sure is not None and sure[0].anchor == "proskolit nove vedouci"
    assert weigh(a, ("training",), "in_scope", 0.99, 0.1) is None  # threshold is honoured


def test_paraphrased_training_is_out_of_scope_with_the_score_in_the_reasons() -> None:
    """No phrase rule names training here; the second opinion does, and says why."""
    text = ("Dobrý den, od ledna u nás začínají tři nové mistrové. Mohl by k nám někdo od vás "
            "přijet a ukázat novým kolegům, jak pracovat s programem a jak uzavřít měsíc?")
    d = request(text, "Noví mistři")
    assert (d.kind.value, d.scope_reason) == ("reject_scope", "training")
    assert any(h.startswith("out_of_scope:model training") for h in d.hits), d.hits
    assert request(text, "Noví mistři", without_model()).kind.value == "ticket"


def test_paraphrased_setup_for_us_is_out_of_scope() -> None:
    text = ("Dobrý den, po sloučení obou závodů potřebujeme docházku postavit celou znovu: "
            "nová střediska, směny, pravidla a práva vedoucích. Mohli byste to nastavit za nás?")
    d = request(text, "Sloučení")
    assert (d.kind.value, d.scope_reason) == ("reject_scope", "global_configuration")


def test_an_ordinary_question_stays_in_scope() -> None:
    for text in ("Dobrý den, kde v programu najdu nastavení přesčasů pro noční směnu? "
                 "Potřebujeme změnit hranici z 22 na 23 hodin.",
                 "Hello, the monthly report shows wrong overtime totals for two employees "
                 "since the update, how can we correct it?"):
        assert request(text).kind.value == "ticket", text


def test_an_existing_export_that_fails_is_a_problem_report() -> None:
    """Tense: the export was set up long ago and fails now: support, not a new export."""
    text = ("Dobrý den, export do mezd, který používáme už tři roky, dnes při spuštění spadne "
            "s chybou 'column cannot be null'. Minulý měsíc proběhl bez problémů.")
    assert request(text, "Export do mezd").kind.value == "ticket"
    wanted = ("Dobrý den, od ledna budeme mít mzdy v novém systému. Potřebovali bychom, "
              "abyste nám nastavili pravidelný export docházky do mezd.")
    d = request(wanted, "Export do mezd")
    assert (d.kind.value, d.scope_reason) == ("reject_scope", "data_export")


def test_emergency_in_other_words_and_not_without_failure() -> None:
    """An outage worded unlike the phrase rules is an emergency by the second opinion; a
    sentence that only shares the topic ("the morning shift is computed right") is not."""
    down = ("Dobrý den, od rána jsou všechny čtečky na bránách černé a nesvítí, ranní směna "
            "stojí před branou a nemá kde pípnout.")
    d = request(down, "čtečky")
    assert (d.kind.value, d.priority) == ("ticket", Priority.EMERGENCY)
    assert any("model emergency" in h for h in d.hits), d.hits
    fine = ("Dobrý den, ranní směně to počítá správně, ale odpolední směně se od změny "
            "pravidla nepočítá příplatek za sobotu. Kde je chyba v nastavení?")
    assert request(fine, "příplatky").priority is Priority.NORMAL


def _dense_per_label(model: AnchorModel, sentences: tuple[str, ...],
                     require: dict[str, Callable[[str], bool]]) -> dict[str, Evidence]:
    """The second opinion by its definition: every window (a sentence, or two neighbouring
    ones joined by a space) scored against every anchor in order."""
    best: dict[str, Evidence] = {}
    windows = list(sentences) + [f"{a} {b}" for a, b in zip(sentences, sentences[1:])]
    for text in windows:
        for i, score in enumerate(model.scores(text)):
            label = model._anchor_label[i]
            if label in require and not require[label](text):
                continue
            if score > 0 and (label not in best or score > best[label].score):
                best[label] = Evidence(label, score, text, model._anchor_text[i])
    return best


def test_per_label_scores_only_anchors_sharing_a_feature_with_the_same_result() -> None:
    """The indexed scoring equals scoring every window against every anchor, to the last bit
    (the scores are printed in the reasons): negations, pairs across two sentences, stop
    words, ties between identical anchors, sentences without any known feature."""
    model = AnchorModel({
        "in_scope": ("jak nastavit smenu", "program nefunguje", "jak nastavit smenu"),
        "emergency": ("server nefunguje vubec", "nikdo se neprihlasi"),
        "training": ("proskolit nove vedouci", "skoleni vedoucich smen"),
    })
    sentences = ("dobry den", "server nefunguje", "nikdo se neprihlasi a nastavit smenu nejde",
                 "proskolit vedouci", "xyz", "nefunguje server", "jak nastavit", "smenu")
    require = {"emergency": lambda text: "server" in text}
    for n in range(len(sentences) + 1):
        for start in range(len(sentences) - n + 1):
            window = sentences[start:start + n]
            assert model.per_label(window, require) == _dense_per_label(model, window, require)
    # The pair across two sentences is a feature of their window only.
    joined = model.per_label(("jak nastavit", "smenu"))["in_scope"]
    assert joined.text == "jak nastavit smenu" and joined.score > 0.99
    # Two anchors of one label tie exactly: the earlier anchor wins, as in order, although
    # the text's first feature ("kalendar") reaches the later one first.
    tied = AnchorModel({"in_scope": ("sestava mzdy", "kalendar mzdy")})
    first, second = tied.scores("kalendar sestava")
    assert first == second > 0
    assert tied.per_label(("kalendar sestava",))["in_scope"].anchor == "sestava mzdy"
