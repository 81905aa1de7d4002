"""The `cropi` command line: run the curriculum, inspect artifacts and lineage, start the Prefect UI.

Every user error (bad config, bad data, unreachable storage) prints ONE line `error: ...` on stderr and
exits with code 2; validation happens before any flow starts, so nothing is registered on bad input.

One module per group of commands; this one only puts them on the typer app:

- `flows.cli.run`: run, compare
- `flows.cli.show`: config, lineage, inspect
- `flows.cli.plan`: plan (predicted cost and pre-run checks of a config)
- `flows.cli.deploy`: deploy, ui (the Prefect server and scheduled deployments)
- `flows.cli.byot`: select, score, loop (an outside trainer's pool, rollouts and checkpoints)
- `flows.cli.common`: one-line errors and deprecation warnings
- `flows.cli.console`: the progress view, runs/<name>/train.log, the summaries (quiet by default, --verbose)
"""

from __future__ import annotations

import typer

from flows.cli import byot, deploy, plan, run, show


def build_app() -> typer.Typer:
    """The typer app with every command, in the order `cropi --help` lists them."""
    app = typer.Typer(add_completion=False, no_args_is_help=True,
                      help="CROPI: curriculum RL with off-policy influence guidance.")
    app.command()(run.run)
    app.command("config")(show.show_config)
    app.command("plan")(plan.plan)
    app.command()(run.compare)
    app.command()(show.lineage)
    app.command()(show.inspect)
    app.command()(deploy.deploy)
    app.command()(deploy.ui)
    app.command("select", help=byot.SELECT_HELP)(byot.select)
    app.command("score", help=byot.SCORE_HELP)(byot.score)
    app.command("loop")(byot.loop_cmd)
    return app


app = build_app()


def main() -> None:  # pragma: no cover - the `cropi` console script, `python -m flows.cli`
    app()
