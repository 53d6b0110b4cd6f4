"""The rules for new requests: complete, licensed, entitled, in scope; an emergency or a normal
ticket. Also which license a request names and when its support ends."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from mailbot.classify.entitlement import entitlement_at
from mailbot.classify.facts import SCOPE_LABELS as SCOPE_LABELS  # re-exported (rules.py)
from mailbot.classify.facts import (
    NEW_REQUEST,
    Finding,
    RuleContext,
    has_description,
    license_candidates,
    mail_facts,
)
from mailbot.classify.learned import LinearModel
from mailbot.classify.opinion import Evidence, weigh
from mailbot.classify.rules_tickets import closed_ticket
from mailbot.domain import DecisionKind, LicenseRecord, Mail, Priority


def request_licenses(mail: Mail, ctx: RuleContext) -> tuple[str, ...]:
    """License numbers of a new request: the mail's own, else the license of the closed
    ticket it answers (a customer writing again long after a ticket was closed)."""
    candidates = license_candidates(mail, ctx)
    if candidates:
        return candidates
    related = closed_ticket(mail, ctx)
    return (related.license,) if related is not None and related.license else ()


def chosen_license(mail: Mail, ctx: RuleContext) -> tuple[str | None, LicenseRecord | None]:
    """Of the registered candidates, the first in the registry's order; with none
    registered, the first candidate (unregistered)."""
    candidates = request_licenses(mail, ctx)
    registered = [(n, r) for n in candidates if (r := ctx.registry.get(n)) is not None]
    if registered:
        return min(registered, key=lambda pair: ctx.registry.rank(pair[0]))
    return (candidates[0] if candidates else None), None


def incomplete_request(mail: Mail, ctx: RuleContext) -> Finding | None:
    """A new request needs a description of the problem and a license number."""
    missing = []
    described = has_description(mail, ctx)
    detail = ""
    model = ctx.settings.model
    learned_models, threshold = model.learned_models, model.learned_no_description
    if described:
        # Words enough: do they describe anything? Not where they name trouble only vaguely,
        # nor where the learned model is sure they do not; either only when no sentence
        # names a fault.
        facts = mail_facts(mail, ctx)
        compiled = facts.compiled
        vague = compiled.vague_trouble.first(facts.request_joined)
        learned = (_learned_opinion(learned_models.description, facts.request_features,
                                    "described", threshold, below=0.0, one_word=False)
                   if learned_models is not None and threshold is not None else None)
        unsure = learned[1] if learned is not None and learned[0] is not None else None
        if unsure and facts.scope_hit is not None:
            unsure = None  # it names the work it asks for, out of scope as that may be
        if (vague or unsure) and not compiled.description_faults.search(
                compiled.description_fault_exceptions.blank_out(facts.request_joined)):
            described, detail = False, f" ({unsure or f'vague: {vague}'})"
    if not described:
        missing.append("description")
    if not request_licenses(mail, ctx):
        missing.append("license")
    if not missing:
        return None
    return Finding(DecisionKind.REJECT_INCOMPLETE, ",".join(missing) + detail,
                   missing=tuple(sorted(missing)), flags=NEW_REQUEST)


def unknown_license(mail: Mail, ctx: RuleContext) -> Finding | None:
    """No license number the mail gives is in the registry."""
    number, record = chosen_license(mail, ctx)
    if number is None or record is not None:
        return None
    return Finding(DecisionKind.REJECT_UNKNOWN_LICENSE, number, flags=NEW_REQUEST)


def expired_license(mail: Mail, ctx: RuleContext) -> Finding | None:
    """The license's support has ended (or its tier gives none)."""
    number, record = chosen_license(mail, ctx)
    if record is None:
        return None
    valid, ends_on = entitlement_at(record, ctx.now, ctx.zone)
    if valid:
        return None
    return Finding(DecisionKind.REJECT_EXPIRED, f"{number} {record.tier.value} ends {ends_on}",
                   flags=NEW_REQUEST)


def out_of_scope(mail: Mail, ctx: RuleContext) -> Finding | None:
    """Work the support service does not do (exports, training, whole setups, development)."""
    facts = mail_facts(mail, ctx)
    text, joined = facts.request_sentences, facts.request_joined
    windows = facts.request_windows
    model = ctx.settings.model
    learned_models = model.learned_models
    scope_model = learned_models.scope if learned_models else None
    if facts.scope_hit is not None:
        reason, hit = facts.scope_hit
        overrule = model.learned_overrule_in_scope
        if scope_model is not None and overrule is not None:
            p_in = scope_model.probabilities(facts.request_features)["in_scope"]
            if p_in >= overrule:  # an export or training named in passing
                return Finding(None, f"{reason}: {hit}, overruled by learned in_scope "
                                     f"{p_in:.3f}")
        return Finding(DecisionKind.REJECT_SCOPE, f"{reason}: {hit}", scope_reason=reason,
                       flags=NEW_REQUEST)
    threshold, agreed = model.learned_scope_threshold, model.learned_scope_with_anchors
    learned = _learned_opinion(scope_model, facts.request_features, "in_scope",
                               min(threshold, agreed if agreed is not None else threshold),
                               model.learned_in_scope_below)
    if learned is not None:
        label, detail, p_out = learned
        if label is None:  # sure it is in scope: a note for the record, the anchors not asked
            return Finding(None, detail)
        if p_out >= threshold:
            return Finding(DecisionKind.REJECT_SCOPE, detail, scope_reason=label,
                           flags=NEW_REQUEST)
        # Below a sure opinion, a request that reports a fault is not rejected.
        fault = facts.compiled.scope_faults.first(joined)
        if fault:
            return Finding(None, f"{detail}; a fault reported: {fault}")
        evidence = facts.opinion(text)  # kept per mail: the anchors below reuse it
        # Less sure: the anchors must lean out of scope too (a fault in an export, "the SFTP
        # transfer ends with an error", reads like an export to a model of topics), and no
        # phrase rule of that reason may know the case as its exception ("the whole system
        # reconfigured itself"); else the anchors alone decide, as below.
        lean = max((evidence[c].score for c in SCOPE_LABELS if c in evidence), default=0.0)
        against = evidence["in_scope"].score if "in_scope" in evidence else 0.0
        vetoed = any(c.vetoed(windows, joined) for c in facts.compiled.scope
                     if c.rule.reason == label)
        if lean > against and not vetoed:
            return Finding(DecisionKind.REJECT_SCOPE, f"{detail}; anchors {lean:.2f} vs "
                           f"in_scope {against:.2f}", scope_reason=label, flags=NEW_REQUEST)
    elif facts.compiled.scope_faults.first(joined):
        return None  # the anchors alone do not reject a fault reported either
    opinion = _second_opinion(facts.opinion(text), SCOPE_LABELS, "in_scope",
                              model.scope_threshold, model.scope_margin)
    if opinion is None:
        return None
    label, detail = opinion
    return Finding(DecisionKind.REJECT_SCOPE, detail, scope_reason=label, flags=NEW_REQUEST)


def _learned_opinion(model: LinearModel | None, feats: tuple[str, ...], against: str,
                     threshold: float, below: float, *, one_word: bool = True
                     ) -> tuple[str | None, str, float] | None:
    """What a learned model is sure of: (its best label other than `against`, the detail,
    that side's probability) when that probability is `threshold` or more, (None, the
    detail, it) when it is `below` or less; None when it is not sure (or there is no
    model). Without `one_word`, a label that one word carries is not sure: without the word
    that favours it most, its side must still reach `threshold`. (One word can name a
    topic, "školení"; none shows that a mail describes nothing: a bigram that a few short
    training mails shared, "který odchází", must not decide that alone.)"""
    if model is None or not feats:
        return None
    p = model.probabilities(feats)
    others = [label for label in model.labels if label != against]
    p_other = 1.0 - p[against]
    if p_other >= threshold:
        top = max(others, key=lambda label: (p[label], label))
        explained = model.explain(feats, top)
        if explained and not one_word:
            strongest = explained[0][0]
            rest = model.probabilities([f for f in feats if f != strongest])
            if 1.0 - rest[against] < threshold:
                return None
        lifts = ", ".join(f"{f} +{w:.2f}" for f, w in explained)
        return top, f"learned {top} {p_other:.2f} (vs {against}): {lifts}", p_other
    if p_other <= below:
        return None, f"learned {against} {p[against]:.2f}", p_other
    return None


def _second_opinion(evidence: dict[str, Evidence], labels: tuple[str, ...], against: str,
                    threshold: float, margin: float) -> tuple[str, str] | None:
    """The label the model is sure of among `labels` (over `against`) and the finding's detail,
    or None when it is not sure."""
    sure = weigh(evidence, labels, against, threshold, margin)
    if sure is None:
        return None
    top, other = sure
    return top.label, (f"model {top.label} {top.score:.2f} vs {against} {other:.2f}: "
                       f"\"{top.text[:80]}\" ~ \"{top.anchor[:60]}\"")


def emergency(mail: Mail, ctx: RuleContext) -> Finding | None:
    """The system stopped for everyone (server down, nobody can clock in): an emergency ticket.

    Not when the sender's own words say the outage is over (:attr:`MailFacts.outage_over`):
    told of in the past tense and working since ("it went down on Saturday, since the
    restart it runs"), in their text or in a mail they forward. Told in the past tense but
    still going on ("it went down at six, we restarted it, still nobody can clock in"), it is.
    """
    facts = mail_facts(mail, ctx)
    if facts.outage_over:
        return None
    text, joined = facts.request_sentences, facts.request_joined
    own, forwarded = facts.own_sentences, facts.forwarded_sentences
    own_joined = facts.own_joined
    nowhere = facts.compiled.nowhere
    if nowhere.search(joined):  # "ani na jednom počítači" is nowhere, not on one computer
        own, forwarded = (tuple(nowhere.blank_out(s, " nikde ") for s in part)
                          for part in (own, forwarded))
        text = own + forwarded  # (the request's sentences are these two parts)
        joined, own_joined = "\n".join(text), "\n".join(own)
    elsewhere = facts.compiled.elsewhere
    if facts.compiled.not_emergency.in_a_sentence(
            (elsewhere.blank_out(s) for s in text), joined) is not None:
        return None
    for compiled in facts.compiled.emergency:
        hit = compiled.match(own, own_joined)
        if not hit and forwarded:
            hit = compiled.match(forwarded)
        if hit:
            reason = compiled.rule.reason
            return Finding(DecisionKind.TICKET, f"{reason}: {hit}", priority=Priority.EMERGENCY,
                           flags=NEW_REQUEST)
    model = ctx.settings.model
    learned_models = model.learned_models
    learned = _learned_opinion(learned_models.emergency if learned_models else None,
                               facts.request_features, "normal",
                               model.learned_emergency_threshold, model.learned_normal_below)
    if learned is not None:
        if learned[0] is None:  # sure it is not an emergency: a note for the record
            return Finding(None, learned[1])
        # Raising a request above everyone else's takes both opinions: the anchors, which
        # count only sentences with words of failure, must lean the same way (the learned
        # model knows topics, not "for everyone" from "for one colleague").
        evidence = facts.opinion(text)
        lean = evidence["emergency"].score if "emergency" in evidence else 0.0
        against = evidence["normal"].score if "normal" in evidence else 0.0
        if lean > against:
            return Finding(DecisionKind.TICKET, f"{learned[1]}; anchors {lean:.2f} vs "
                           f"normal {against:.2f}", priority=Priority.EMERGENCY,
                           flags=NEW_REQUEST)
    opinion = _second_opinion(facts.opinion(text), ("emergency",), "normal",
                              model.emergency_threshold, model.emergency_margin)
    if opinion is None:
        return None
    return Finding(DecisionKind.TICKET, opinion[1], priority=Priority.EMERGENCY,
                   flags=NEW_REQUEST)


def new_ticket(mail: Mail, ctx: RuleContext) -> Finding | None:
    """Every complete, entitled, in-scope request becomes a normal ticket."""
    return Finding(DecisionKind.TICKET, priority=Priority.NORMAL, flags=NEW_REQUEST)


def entitlement_end(record: LicenseRecord, now: datetime, zone: ZoneInfo) -> date | None:
    """The last day of support of `record` (None: open-ended or no support)."""
    return entitlement_at(record, now, zone).ends_on
