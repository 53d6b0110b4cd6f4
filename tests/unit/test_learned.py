"""The learned second opinion (mailbot.classify.learned): training, the file, the config key,
and how the rules use it (asked where the phrase rules are silent, before the anchors)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from mailbot import config as config_mod
from mailbot.classify.learned import LinearModel, TrainedModel, request_features, train
from mailbot.classify.opinion import features
from mailbot.domain import Decision, Priority
from mailbot.errors import ConfigError
from tests.unit.test_opinion import request as opinion_request

CONFIG = config_mod.load()

# A toy corpus: "zaloha" (backup) requests are development work, "tisk" (printing) ones are
# support; the words around them are shared.
EXAMPLES = [
    (request_features([f"prosim o {topic} sestavy {extra}"]), label)
    for n in range(6)
    for topic, label in (("tisk", "in_scope"), ("zalohovani", "custom_development"))
    for extra in (f"cislo{'abcdef'[n]}",)
]


def test_training_separates_the_kinds_and_is_deterministic() -> None:
    model = train(EXAMPLES, ("in_scope", "custom_development"), against="in_scope")
    p = model.probabilities(request_features(["potrebujeme zalohovani dat"]))
    assert p["custom_development"] > 0.8
    p = model.probabilities(request_features(["nejde tisk"]))
    assert p["in_scope"] > 0.8
    assert math.isclose(sum(p.values()), 1.0)
    assert "cisloa" not in model.weights  # seen in one example only: left out
    again = train(EXAMPLES, ("in_scope", "custom_development"), against="in_scope")
    assert TrainedModel(model, None).dumps() == TrainedModel(again, None).dumps()


def test_explain_names_the_features_that_favour_a_label() -> None:
    model = LinearModel(("in_scope", "training"), (0.0, 0.0),
                        {"skol": (-1.0, 1.0), "novy": (-0.2, 0.2), "tisk": (1.0, -1.0)})
    feats = tuple(sorted(("skol", "novy", "tisk")))
    assert model.explain(feats, "training") == [("skol", 1.0), ("novy", pytest.approx(0.2))]
    assert model.explain(feats, "in_scope") == [("tisk", 1.0)]


def test_the_file_round_trips_and_bad_files_are_named() -> None:
    scope = train(EXAMPLES, ("in_scope", "custom_development"), against="in_scope")
    emergency = LinearModel(("normal", "emergency"), (0.5, -0.5), {"stoj": (-2.0, 2.0)})
    trained = TrainedModel(scope, emergency, ("toy: 12 mails",))
    loaded = TrainedModel.loads(trained.dumps())
    assert loaded.trained_on == ("toy: 12 mails",)
    feats = request_features(["potrebujeme zalohovani"])
    assert loaded.scope is not None and scope.probabilities(feats) == pytest.approx(
        loaded.scope.probabilities(feats), abs=1e-4)
    assert TrainedModel.loads(loaded.dumps()).dumps() == loaded.dumps()

    good = json.loads(trained.dumps())
    for change, message in (
        ({"format": "other"}, "format"),
        ({"scope": {**good["scope"], "bias": [0.0]}}, "scope.bias"),
        ({"emergency": {**good["emergency"], "weights": {"x": [1.0, float("nan")]}}},
         "emergency.weights['x']"),
        ({"emergency": {**good["emergency"], "weights": {"x": [1.0, "2.0"]}}},
         "emergency.weights['x']"),
        ({"emergency": {**good["emergency"], "weights": {"x": [1.0, True]}}},
         "emergency.weights['x']"),
        ({"emergency": {**good["emergency"], "weights": {"x": [1.0]}}},
         "emergency.weights['x']"),
        ({"emergency": {**good["emergency"], "weights": {"x": {"a": 1.0, "b": 2.0}}}},
         "emergency.weights['x']"),
        ({"scope": {**good["scope"], "labels": ["a", "b"]}}, "in_scope"),
        ({"emergency": {**good["emergency"], "labels": ["calm", "panic"]}}, "emergency.labels"),
    ):
        with pytest.raises(ValueError, match=message.replace("[", r"\[")):
            TrainedModel.loads(json.dumps({**good, **change}))
    with pytest.raises(ValueError, match="not JSON"):
        TrainedModel.loads("{")


def test_the_config_key_names_a_missing_or_broken_file(tmp_path: Path) -> None:
    for content, message in ((None, "cannot read"), ("[1, 2]", "not a mailbot-linear-1 file")):
        path = tmp_path / "model.json"
        if content is not None:
            path.write_text(content, encoding="utf-8")
        with pytest.raises(ConfigError, match=f"classify.model.learned: .*{message}"):
            config_mod.parse({"classify": {"model": {"learned": "model.json"}}}, root=tmp_path)
    path.write_text(TrainedModel(None, None).dumps(), encoding="utf-8")
    loaded = config_mod.parse({"classify": {"model": {"learned": "model.json"}}}, root=tmp_path)
    assert loaded.classify.model.trained == TrainedModel(None, None)
    with pytest.raises(ConfigError, match="classify.model.trained"):  # not settable from TOML
        config_mod.parse({"classify": {"model": {"trained": {"scope": None}}}}, root=tmp_path)


def with_trained(trained: TrainedModel | None, **settings: object) -> config_mod.Config:
    model = CONFIG.classify.model.model_copy(update={"trained": trained, **settings})
    return CONFIG.model_copy(update={"classify": CONFIG.classify.model_copy(
        update={"model": model})})


def request(text: str, config: config_mod.Config, subject: str = "Dotaz") -> Decision:
    """`text` (with a license line) decided as a new request under `config`."""
    return opinion_request(text, subject, config)


def one_word_model(word: str, labels: tuple[str, str], weight: float = 6.0) -> LinearModel:
    """A model sure of labels[1] when `word`'s stem is in the request, of labels[0] else."""
    return words_model((word,), labels, weight)


def words_model(words: tuple[str, ...], labels: tuple[str, str], weight: float = 6.0
                ) -> LinearModel:
    """A model whose each of `words` (their stems) weighs `weight` towards labels[1]."""
    stems = [stem for word in words for stem in features(word)]
    return LinearModel(labels, (3.0, -3.0), {stem: (-weight, weight) for stem in stems})


# Worded so that no phrase rule and no anchor knows it: only the model can decide it.
CANTEEN = ("Dobrý den, chtěli bychom, aby terminál u jídelny ukazoval i jídelníček na "
           "příští týden. Dá se to zařídit?")


def test_a_sure_learned_model_rejects_what_no_phrase_rule_knows() -> None:
    assert request(CANTEEN, with_trained(None)).kind.value == "ticket"
    model = one_word_model("jidelnicek", ("in_scope", "custom_development"))
    d = request(CANTEEN, with_trained(TrainedModel(model, None)))
    assert (d.kind.value, d.scope_reason) == ("reject_scope", "custom_development")
    [hit] = [h for h in d.hits if h.startswith("out_of_scope:")]
    assert hit.startswith("out_of_scope:learned custom_development 1.00") and "jidel" in hit
    # Below the configured threshold it is not sure: the anchors decide (a ticket here).
    unsure = with_trained(TrainedModel(model, None), learned_scope_threshold=1.0,
                          learned_scope_with_anchors=None)
    assert request(CANTEEN, unsure).kind.value == "ticket"
    # The switch for the whole second opinion switches it off too.
    assert request(CANTEEN, with_trained(TrainedModel(model, None), enabled=False)
                   ).kind.value == "ticket"


def test_a_learned_in_scope_overrules_the_anchors_and_is_recorded() -> None:
    """Paraphrased training the anchors take out of scope; a model sure it is support keeps it
    a ticket, and the decision says so."""
    text = ("Dobrý den, potřebujeme, aby někdo přijel a mistrům z nové haly vyložil, jak se s "
            "tím pracuje.")
    anchors = with_trained(None)
    assert request(text, anchors, "Noví mistři").kind.value == "reject_scope"
    sure_in = LinearModel(("in_scope", "training"), (5.0, -5.0), {})
    d = request(text, with_trained(TrainedModel(sure_in, None)), "Noví mistři")
    assert d.kind.value == "ticket"
    assert "out_of_scope:learned in_scope 1.00" in d.hits


def test_a_learned_emergency_needs_the_anchors_leaning_its_way() -> None:
    """The model knows topics, not "one colleague" from "everyone": it raises a request only
    where the anchors, which need words of failure, lean towards an emergency too."""
    down = "Dobrý den, od rána jsou čtečky na bránách jako mrtvé a lidé stojí před branou."
    fine = "Dobrý den, na bránách bychom chtěli jiné hlášky na čtečkách, kde se mění?"
    for text in (down, fine):
        model = one_word_model("branach", ("normal", "emergency"))  # in both texts
        d = request(text, with_trained(TrainedModel(None, model), emergency_threshold=1.0))
        expected = Priority.EMERGENCY if text is down else Priority.NORMAL
        assert d.priority is expected, (text, d.hits)
        if text is down:
            assert any(h.startswith("emergency:learned emergency") and "anchors" in h
                       for h in d.hits), d.hits
    # Sure it is no emergency: the anchors are not asked (they would say emergency).
    calm = LinearModel(("normal", "emergency"), (5.0, -5.0), {})
    d = request(down, with_trained(TrainedModel(None, calm)))
    assert d.priority is Priority.NORMAL and "emergency:learned normal 1.00" in d.hits


def test_the_shipped_model_is_loaded_by_the_default_config() -> None:
    trained = CONFIG.classify.model.trained
    assert trained is not None and trained.scope is not None and trained.emergency is not None
    assert trained.trained_on and all("mails" in t for t in trained.trained_on)


def test_a_phrase_rule_hit_is_overruled_only_by_a_near_certain_in_scope() -> None:
    """"Export" and "payroll" in one sentence is the data-export rule's hit; a model all but
    certain the request is support (the export works, the premiums are missing) overrules it,
    and the decision records both."""
    text = ("Dobrý den, chybí noční příplatky tří lidí v uzávěrce; export pro mzdy necháme "
            "beze změny.")
    sure_in = LinearModel(("in_scope", "data_export"), (8.0, -8.0), {})
    assert request(text, with_trained(None)).scope_reason == "data_export"
    for overrule, kind in ((None, "reject_scope"), (1.0, "reject_scope"), (0.99, "ticket")):
        d = request(text, with_trained(TrainedModel(sure_in, None),
                                       learned_overrule_in_scope=overrule))
        assert d.kind.value == kind, (overrule, d.hits)
    assert any(h.startswith("out_of_scope:data_export:") and "overruled by learned in_scope"
               in h for h in d.hits), d.hits


def test_a_less_sure_learned_model_needs_the_anchors_and_no_rule_exception() -> None:
    """Between `learned_scope_with_anchors` and `learned_scope_threshold` the learned model
    rejects only where the anchors lean out of scope too, and never where a phrase rule of
    its reason knows the case as an exception (its `unless`)."""
    model = one_word_model("system", ("in_scope", "global_configuration"), weight=3.5)
    between = with_trained(TrainedModel(model, None), learned_scope_threshold=0.999,
                           learned_scope_with_anchors=0.7)
    # The anchors lean to a whole setup: the less sure model decides, and says both.
    asked = ("Dobrý den, přebíráme druhý areál a potřebovali bychom, aby k nám někdo přijel a "
             "celý systém tam připravil tak, jak ho máme u nás.")
    d = request(asked, between, "Systém")
    assert (d.kind.value, d.scope_reason) == ("reject_scope", "global_configuration"), d.hits
    [hit] = [h for h in d.hits if h.startswith("out_of_scope:")]
    lean, against = re.search(r"anchors ([\d.]+) vs in_scope ([\d.]+)", hit).groups()  # type: ignore[union-attr]
    assert "learned global_configuration 0.73" in hit and float(lean) > float(against), hit
    # The system that reset itself: the setup rule's exception ("sám") stands (the anchors,
    # which lean to a setup here but are not sure, decide).
    itself = "Dobrý den, po aktualizaci se celý systém sám přenastavil do angličtiny, vrátíte ho?"
    assert request(itself, between, "Systém").kind.value == "ticket"
    assert request(itself.replace(" sám", ""), between, "Systém").kind.value == "reject_scope"
    # A fault the anchors read as support: the less sure model alone does not reject.
    fault = "Dobrý den, nejde vytisknout měsíční sestavu, celý systém hlásí chybu 17."
    assert request(fault, between, "Sestava").kind.value == "ticket"
    assert request(fault, with_trained(TrainedModel(model, None), learned_scope_threshold=0.7)
                   ).kind.value == "reject_scope"  # what the anchors' check prevents


def test_a_sure_description_model_finds_words_that_describe_nothing() -> None:
    """Words enough for the count, but a change of contact person describes no problem: the
    description model, where it reaches `learned_no_description`, says so in the reasons."""
    notice = ("Dobrý den, od prosince přebírá správu docházky na našem úřadě pan Novák, "
              "dosavadní správkyně odchází na mateřskou dovolenou. Děkujeme za spolupráci.")
    assert request(notice, with_trained(None), "Kontakt").kind.value == "ticket"
    model = words_model(("sprava", "materska"), ("described", "no_description"))
    sure = with_trained(TrainedModel(None, None, (), model), learned_no_description=0.95)
    d = request(notice, sure, "Kontakt")
    assert (d.kind.value, d.missing) == ("reject_incomplete", ("description",)), d.hits
    [hit] = [h for h in d.hits if h.startswith("incomplete_request:")]
    assert "learned no_description 1.00" in hit, hit
    # Switched off (None), or not sure enough, the word count decides.
    assert request(notice, with_trained(TrainedModel(None, None, (), model),
                                        learned_no_description=None), "Kontakt"
                   ).kind.value == "ticket"
    weak = words_model(("sprava", "materska"), ("described", "no_description"), weight=2.0)
    assert request(notice, with_trained(TrainedModel(None, None, (), weak),
                                        learned_no_description=0.95), "Kontakt"
                   ).kind.value == "ticket"
    # One word, however heavy, does not show that a mail describes nothing: without it the
    # opinion is not sure.
    one = one_word_model("sprava", ("described", "no_description"))
    assert request(notice, with_trained(TrainedModel(None, None, (), one),
                                        learned_no_description=0.95), "Kontakt"
                   ).kind.value == "ticket"


def test_the_model_file_keeps_the_description_model() -> None:
    model = one_word_model("sprava", ("described", "no_description"))
    trained = TrainedModel(None, None, ("x: 1 mails",), model)
    again = TrainedModel.loads(trained.dumps())
    assert again == trained and again.dumps() == trained.dumps()
    wrong = trained.dumps().replace('"no_description"', '"nothing"')
    with pytest.raises(ValueError, match="description.labels"):
        TrainedModel.loads(wrong)


def test_an_introduction_with_nothing_to_solve_names_no_fault() -> None:
    """A new administrator introducing himself ("in my absence my colleague stands in",
    "nothing specific to solve for now") names no fault: where the description model is sure
    it describes nothing, his "ne-" words ("nepřítomnosti", "neřešíme") do not stand for one
    (`description_fault_exceptions`). A fault of the absences ("nezapisují se") still does."""
    intro = ("Dobrý den, dovolte, abych se představil: od prosince vedu oddělení IT po paní "
             "Malé. Budu vaší kontaktní osobou pro docházku, v mé nepřítomnosti mě zastupuje "
             "kolega Novák. Do budoucna plánujeme nový server, zatím ale nic konkrétního "
             "neřešíme.")
    model = words_model(("predstavil", "kontaktni"), ("described", "no_description"))
    sure = with_trained(TrainedModel(None, None, (), model), learned_no_description=0.95)
    d = request(intro, sure, "Nový kontakt")
    assert (d.kind.value, d.missing) == ("reject_incomplete", ("description",)), d.hits
    fault = intro.replace("zatím ale nic konkrétního neřešíme",
                          "jen se od pondělí nezapisují nepřítomnosti z portálu")
    assert request(fault, sure, "Nový kontakt").kind.value == "ticket"


def test_a_fault_reported_is_not_rejected_by_a_less_sure_opinion() -> None:
    """A request that reports a fault ("the month-end closing crashes with an error") is
    not rejected by the learned model below `learned_scope_threshold` nor by the anchors:
    they read its topic words, not the work it asks for. A sure model still decides."""
    model = one_word_model("system", ("in_scope", "global_configuration"), weight=3.5)
    between = with_trained(TrainedModel(model, None), learned_scope_threshold=0.999,
                           learned_scope_with_anchors=0.7)
    asked = ("Dobrý den, přebíráme druhý areál a potřebovali bychom, aby k nám někdo přijel a "
             "celý systém tam připravil tak, jak ho máme u nás.")
    crashed = asked + " Při pokusu o to nám program spadne s chybou 41."
    assert request(asked, between, "Systém").kind.value == "reject_scope"
    d = request(crashed, between, "Systém")
    assert d.kind.value == "ticket", d.hits
    assert any("a fault reported: spadne" in h for h in d.hits), d.hits
    # Anchors alone (no learned model) that know the request hold back the same.
    anchors_only = with_trained(None, anchors={
        "in_scope": ("nejde vytisknout mesicni sestavu program hlasi chybu",),
        "global_configuration": ("prebirame druhy areal potrebovali bychom aby k nam nekdo "
                                 "prijel a cely system tam pripravil tak jak ho mame u nas",)})
    assert request(asked, anchors_only, "Systém").kind.value == "reject_scope"
    assert request(crashed, anchors_only, "Systém").kind.value == "ticket"
    # A model sure of it (at the threshold) rejects even so.
    sure = with_trained(TrainedModel(model, None), learned_scope_threshold=0.7)
    assert request(crashed, sure, "Systém").kind.value == "reject_scope"
