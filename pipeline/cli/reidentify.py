"""`telerad reidentify BATCH_ID [CLOUD_STUDY_ID] --reason TEXT`: audited re-identification."""

from __future__ import annotations

import json
from typing import Optional

import typer

from pipeline.cli.common import shown
from pipeline.exceptions import TeleradError


def reidentify_command(
    batch_id: str = typer.Argument(..., help="The batch ID `telerad submit` printed."),
    cloud_study_id: Optional[str] = typer.Argument(None, help="One study of the batch (default: all)."),
    reason: Optional[str] = typer.Option(
        None, "--reason", help="Why you need the identities (required; recorded only as a digest)."
    ),
    reason_code: Optional[str] = typer.Option(
        None, "--reason-code",
        help="A category recorded in clear: clinical-followup, critical-finding, patient-request, "
        "quality-assurance, legal-request, other.",
    ),
    actor: Optional[str] = typer.Option(None, "--actor", help="Who is asking (default: your login name)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Print the original patient ID, study UID and accession number behind a batch's cloud studies.

    Needs the mapping key. Every call, granted or not, is written to the audit log.
    """
    from pipeline.mapping import reidentify
    from pipeline.settings import load_settings

    try:
        studies = reidentify(
            load_settings(), batch_id, cloud_study_id,
            reason=reason, actor=actor, reason_code=reason_code,
        )
    except TeleradError as exc:
        typer.secho(f"error: {shown(exc, keep_newlines=True)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps([s.as_dict() for s in studies], indent=2))
        return
    for i, s in enumerate(studies):
        if i:
            typer.echo("")
        typer.echo(f"cloud study ID:      {shown(s.cloud_study_id)}")
        typer.echo(f"patient ID:          {shown(s.patient_id)}")
        typer.echo(f"study instance UID:  {shown(s.study_instance_uid)}")
        typer.echo(f"accession number:    {shown(s.accession_number)}")


def register(app: typer.Typer) -> None:
    app.command("reidentify")(reidentify_command)
