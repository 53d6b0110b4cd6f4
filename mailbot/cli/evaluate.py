"""`mailbot eval DIR`: score the decision engine against a labelled directory; `mailbot model
train|cross`: train the learned second opinion and cross-validate it."""

from __future__ import annotations

import json
import os
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
@click.option("--trained-from", "trained_from", multiple=True, metavar="DIR",
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The learned models trained on these labelled directories (repeatable) "
                   "instead of the configured file: score a set they never saw.")
@click.option("--no-model", is_flag=True, help="Without the second opinion: the rules alone.")
@config_option
def evaluate(directory: Path, now_text: str, verify_staff: bool, authserv_ids: tuple[str, ...],
             as_json: bool, fail_under: float | None, anchors_dir: Path | None,
             trained_from: tuple[Path, ...], no_model: bool, config_path: Path | None) -> None:
    """Decide every labelled mail of DIR (labels.jsonl, licenses.csv) and print the score:
    decision and license accuracy, a table per decision, every miss with the rules that hit,
    and the parse and decide time per mail."""
    from mailbot.evaluate import format_report, read_labels
    from mailbot.learning import decide_directory, with_model

    cfg = load_config(config_path)
    if authserv_ids:
        conversation = cfg.conversation.model_copy(update={"authserv_ids": tuple(authserv_ids)})
        cfg = cfg.model_copy(update={"conversation": conversation})
    model = cfg.classify.model
    if no_model:
        model = model.model_copy(update={"enabled": False})
    elif anchors_dir is not None:
        from mailbot.evaluate import anchors_from

        learnt = anchors_from(anchors_dir, read_labels(anchors_dir), cfg.classify)
        model = model.model_copy(update={"anchors": learnt})
    cfg = cfg.model_copy(update={"classify": cfg.classify.model_copy(update={"model": model})})
    if trained_from:
        from mailbot.learning import train_model

        cfg = with_model(cfg, train_model(trained_from, cfg.classify))
    try:
        result, parse_s, decide_s = decide_directory(directory, cfg, parse_now(now_text),
                                                     verify_staff)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{directory}: {exc}") from None
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


@cli.group("model")
def model_group() -> None:
    """The learned second opinion: train it on labelled mail, measure it on unseen sets."""


@model_group.command("train")
@click.argument("directories", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The model file to write (`classify.model.learned` names it).")
@config_option
def model_train(directories: tuple[Path, ...], out: Path, config_path: Path | None) -> None:
    """Train the learned models on every mail of the labelled DIRECTORIES and write them to
    OUT. The same directories give the same file."""
    from mailbot.learning import train_model

    cfg = load_config(config_path, learned=False)
    trained = train_model(directories, cfg.classify)
    out.write_text(trained.dumps(), encoding="utf-8")
    sizes = {name: len(m.weights) for name in ("scope", "emergency")
             if (m := getattr(trained, name)) is not None}
    click.echo(f"{out}: trained on {', '.join(trained.trained_on)}; features kept: "
               + ", ".join(f"{k} {v}" for k, v in sizes.items()))


@model_group.command("cross")
@click.argument("directories", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--now", "now_text", default=LABELS_NOW, show_default=True,
              help="The clock the labels assume, ISO-8601 with offset.")
@click.option("--authserv-id", "authserv_ids", multiple=True, metavar="ID",
              help="Trust Authentication-Results of this border MTA (repeatable).")
@click.option("--unverified", "unverified", multiple=True, metavar="DIR",
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A directory whose staff replies carry no Authentication-Results "
                   "(scored without staff verification; repeatable).")
@click.option("--jobs", type=click.IntRange(1, 64), default=None, metavar="N",
              help="Processes holding out a set each (default: one per CPU); the same result.")
@config_option
def model_cross(directories: tuple[Path, ...], now_text: str, authserv_ids: tuple[str, ...],
                unverified: tuple[Path, ...], jobs: int | None, config_path: Path | None) -> None:
    """Leave one set out: decide each labelled directory with models trained on all the
    others, and print each set's score, its misses and the total: what a set nobody trained
    on will score (the rules themselves were written knowing the sets they were tuned on)."""
    from mailbot.learning import cross_validate

    cfg = load_config(config_path)
    if authserv_ids:
        conversation = cfg.conversation.model_copy(update={"authserv_ids": tuple(authserv_ids)})
        cfg = cfg.model_copy(update={"conversation": conversation})
    results = cross_validate(directories, cfg, parse_now(now_text), unverified,
                             jobs=jobs or _cpus())
    right = total = 0
    for directory, result in results:
        right += result.decisions_right
        total += result.total
        click.echo(f"{directory.name:12s} decisions {100 * result.decisions_right / max(result.total, 1):5.1f} % "
                   f"({result.decisions_right}/{result.total}), licenses "
                   f"{100 * result.licenses_right / max(result.total, 1):5.1f} %, "
                   f"automatic answered {len(result.auto_answered)}, "
                   f"foreign numbers {len(result.foreign_numbers)}")
        for miss in result.misses:
            click.echo(f"    {miss.label.file}: {'; '.join(miss.problems)} | "
                       f"{' '.join(miss.decision.hits)[:160]}")
    click.echo(f"all          decisions {100 * right / max(total, 1):5.1f} % ({right}/{total})")


def _cpus() -> int:
    """The CPUs this process may run on (where the platform says), else the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
