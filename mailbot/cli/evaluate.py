"""`mailbot eval DIR`: score the decision engine against a labelled directory."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from mailbot.cli.base import cli, config_option, load_config, parse_now

LABELS_NOW = "2026-11-25T10:00:00+01:00"
"""The instant the shared labelled sets were labelled at (their README)."""


@cli.command("eval")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--now", "now_text", default=LABELS_NOW, show_default=True,
              help="The clock the labels assume, ISO-8601 with offset.")
@click.option("--verify-staff/--no-verify-staff", default=True, show_default=True,
              help="Staff replies need a trusted Authentication-Results or reply token "
                   "(--no-verify-staff: the From domain is enough, for sets without A-R).")
@click.option("--authserv-id", "authserv_ids", multiple=True, metavar="ID",
              help="Trust Authentication-Results of this border MTA (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="The score as one JSON object.")
@click.option("--fail-under", type=click.FloatRange(0, 100), default=None, metavar="PCT",
              help="Exit 1 when decision accuracy is below PCT.")
@click.option("--anchors-from", "anchors_dir", default=None, metavar="DIR",
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The second opinion's anchors learnt from another labelled directory "
                   "instead of the configured ones (a cross-check on unseen wording).")
@click.option("--no-model", is_flag=True, help="Without the second opinion: the rules alone.")
@config_option
def evaluate(directory: Path, now_text: str, verify_staff: bool, authserv_ids: tuple[str, ...],
             as_json: bool, fail_under: float | None, anchors_dir: Path | None,
             no_model: bool, config_path: Path | None) -> None:
    """Decide every labelled mail of DIR (labels.jsonl, licenses.csv) and print the score:
    decision and license accuracy, a table per decision, every miss with the rules that hit,
    and the parse and decide time per mail."""
    from mailbot.classify.decide import decide
    from mailbot.classify.rules import RuleContext
    from mailbot.evaluate import format_report, read_labels, score
    from mailbot.ingest.parse import parse
    from mailbot.registry import DictRegistry, read_license_file

    cfg = load_config(config_path)
    conversation = cfg.conversation.model_copy(update={"verify_staff": verify_staff})
    if authserv_ids:
        conversation = conversation.model_copy(update={"authserv_ids": tuple(authserv_ids)})
    cfg = cfg.model_copy(update={"conversation": conversation})
    model = cfg.classify.model
    if no_model:
        model = model.model_copy(update={"enabled": False})
    elif anchors_dir is not None:
        from mailbot.evaluate import anchors_from

        learnt = anchors_from(anchors_dir, read_labels(anchors_dir), cfg.classify)
        model = model.model_copy(update={"anchors": learnt})
    cfg = cfg.model_copy(update={"classify": cfg.classify.model_copy(update={"model": model})})
    try:
        labels = read_labels(directory)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{directory}: {exc}") from None
    records, errors = read_license_file(directory / "licenses.csv")
    if errors:
        raise click.ClickException(f"{directory / 'licenses.csv'}: {errors[0]}")
    ctx = RuleContext.from_config(cfg, DictRegistry({r.license: r for r in records}),
                                  parse_now(now_text), None)
    pairs = []
    parse_s = decide_s = 0.0
    for label in labels:
        raw = (directory / label.file).read_bytes()
        t0 = time.perf_counter()
        mail = parse(raw)
        t1 = time.perf_counter()
        decision = decide(mail, ctx)
        decide_s += time.perf_counter() - t1
        parse_s += t1 - t0
        pairs.append((label, decision))
    result = score(pairs)
    n = max(result.total, 1)
    if as_json:
        click.echo(json.dumps({"directory": str(directory), **result.as_json(),
                               "parse_ms_per_mail": round(1000 * parse_s / n, 3),
                               "decide_ms_per_mail": round(1000 * decide_s / n, 3)},
                              ensure_ascii=False))
    else:
        click.echo(format_report(result, f"{directory}: {result.total} labelled mails",
                                 [("parse", 1000 * parse_s / n), ("decide", 1000 * decide_s / n)]))
    if fail_under is not None and 100.0 * result.decisions_right / n < fail_under:
        raise SystemExit(1)
