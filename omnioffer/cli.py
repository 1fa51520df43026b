"""The ``omnioffer`` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import typer

from omnioffer.commands import bench, demo, features, journeys, models, serving, world

app = typer.Typer(
    name="omnioffer",
    help="Real-time personalization engine for omnichannel retail and loyalty programs.",
    no_args_is_help=True,
    add_completion=False,
)
app.command()(world.schema)
app.command()(world.catalog)
app.command()(world.simulate)
app.command()(world.topics)
app.command()(demo.demo)
app.add_typer(features.flow_app, name="flow")
app.add_typer(features.features_app, name="features")
app.add_typer(journeys.journeys_app, name="journeys")
app.command()(models.train)
app.command()(models.evaluate)
app.add_typer(models.models_app, name="models")
app.command()(serving.serve)
app.command()(serving.decisions)
app.command()(serving.eraser)
app.add_typer(bench.bench_app, name="bench")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
