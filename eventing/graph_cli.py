"""``mlfn graph``: the pipeline of the functions package as Mermaid, DOT, JSON or Markdown."""

from __future__ import annotations

from pathlib import Path

import click

from runtime.settings import RuntimeSettings

__all__ = ["graph"]


@click.command("graph")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mermaid", "dot", "json", "markdown"]),
    default="mermaid",
    show_default=True,
    help="Mermaid flowchart, Graphviz DOT, JSON (what the console draws), or a Markdown page.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write to this file instead of stdout.",
)
@click.pass_obj
def graph(settings: RuntimeSettings, fmt: str, output: Path | None) -> None:
    """Draw the event-driven pipeline: topics, sources, functions, brokers, triggers, models.

    Built from the function specs alone (nothing needs to run). Triggers show their
    filters, replies the event types a function emits, dashed arrows dead letters and
    model versions.

    \b
    Example:
      mlfn graph                                  # Mermaid, paste into Markdown
      mlfn graph --format dot | dot -Tsvg > pipeline.svg
      mlfn graph --format markdown -o docs/graph.md
    """
    from eventing.graph import pipeline_graph, render
    from runtime.errors import DiscoveryError, SpecError
    from runtime.registry import discover

    try:
        specs = [fn.spec for fn in discover(settings.common.functions_package)]
    except (DiscoveryError, SpecError) as err:
        raise click.ClickException(str(err)) from err
    text = render(pipeline_graph(specs, settings.common.namespace), fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as err:
        raise click.ClickException(f"cannot write {output}: {err.strerror or err}") from err
    click.echo(f"wrote {output}", err=True)
