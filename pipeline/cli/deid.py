"""`telerad verify` and `telerad profile show|diff`: look at what de-identification does.

Thin commands over ``pipeline.deid``; `telerad anonymize` lives in anonymize.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from pipeline.cli.common import shown

profile_app = typer.Typer(help="Show or compare de-identification profiles.", no_args_is_help=True)


def verify(
    directory: Path = typer.Argument(..., exists=True, file_okay=False, help="Folder of de-identified files."),
    mapping: Optional[str] = typer.Option(None, "--mapping", help="Batch ID whose mapping's originals to search for."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Judge by this profile (default: what each file records)."),
    option: list[str] = typer.Option([], "--option", help="Extra option for --profile."),
    allow_name: list[str] = typer.Option([], "--allow-name", help="A patient name alias set with --set."),
    org: Optional[str] = typer.Option(None, "--org", help="Organisation whose pseudonyms the files hold "
                                      "(default: the manifest's beside the files, else the settings')."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Scan de-identified files for anything that must not leave; exit 1 on any finding."""
    from pipeline.deid import Verifier, load_profile
    from pipeline.pseudonyms import Pseudonyms
    from pipeline.run import tree_verifier
    from pipeline.settings import load_settings

    settings = load_settings()
    originals: list[str] = []
    mapped: dict = {}
    if mapping:
        from pipeline.mapping import MappingStore

        mapped = MappingStore.from_settings(settings).get(mapping)
        originals = Verifier.originals_from_mapping(mapped)
    organization = org or _manifest_organization(directory) or mapped.get("organization") or settings.organization
    prof = load_profile(profile, option) if profile else None
    verifier = tree_verifier(Pseudonyms(settings.pseudonym_secret, organization), prof,
                             originals=originals, allow_names=allow_name)
    report = verifier.verify_tree(directory)
    if report.files == 0:
        typer.secho(f"error: {directory.name} holds no files to verify: nothing was checked "
                    "(give the folder the de-identified files were written to)", fg=typer.colors.RED, err=True)
        sys.exit(1)
    from pipeline.audit import AuditLog

    AuditLog.from_settings(settings).append(
        "verify.run", batch_id=mapping, actor=_operator(), outcome="ok" if report.ok else "failed",
        files=report.files, findings=len(report.findings),
    )
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for f in report.findings:
            typer.echo(shown(f))
        typer.echo(f"{report.files} files checked, {len(report.findings)} findings"
                   + ("" if report.ok else " - NOT safe to send"))
    if not report.ok:
        sys.exit(1)


def _manifest_organization(directory: Path) -> str | None:
    """The organisation a batch's manifest.json names (in the folder or its parent), if any."""
    for candidate in (directory / "manifest.json", directory.parent / "manifest.json"):
        try:
            org = json.loads(candidate.read_text(encoding="utf-8")).get("organization")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(org, str) and org:
            return org
    return None


def _operator() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no login name (containers): still audited, as unknown
        return "unknown"


@profile_app.command("show")
def show(
    name: Optional[str] = typer.Argument(
        None, help="A preset or a profile file; default: the configured profile (TELERAD_PROFILE) and options."),
    option: list[str] = typer.Option([], "--option", help="Extra option."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print the effective action for every attribute of a profile (the configured one by default)."""
    from pipeline.deid import load_profile

    if name is None:
        from pipeline.settings import load_settings

        settings = load_settings()
        name, option = settings.profile, list(settings.options) + list(option)
    prof = load_profile(name, option)
    rows = prof.effective_actions()
    if as_json:
        typer.echo(json.dumps({"profile": prof.describe(), "attributes": rows}, indent=2))
        return
    d = prof.describe()
    typer.echo(shown(f"profile {d['profile']}; options: {', '.join(d['options']) or 'none'}; {d['standard']}"))
    for r in rows:
        extra = f" = {r['value']!r}" if "value" in r else ""
        typer.echo(shown(f"{r['tag']:<14} {r['attribute']:<48} {r['action']}{extra}  [{r['code']}, {r['source']}]"))


@profile_app.command("diff")
def diff(
    a: str = typer.Argument(..., help="First profile."),
    b: str = typer.Argument(..., help="Second profile."),
) -> None:
    """Print the attributes whose effective action differs between two profiles."""
    from pipeline.deid import load_profile

    pa, pb = load_profile(a), load_profile(b)
    left = {(r["tag"], r["attribute"]): r for r in pa.effective_actions()}
    right = {(r["tag"], r["attribute"]): r for r in pb.effective_actions()}
    n = 0
    for key in sorted(set(left) | set(right)):
        ra, rb = left.get(key), right.get(key)
        da = (ra["action"], ra.get("value")) if ra else ("(not listed)", None)
        db = (rb["action"], rb.get("value")) if rb else ("(not listed)", None)
        if da != db:
            n += 1
            typer.echo(shown(f"{key[0]:<14} {key[1]:<48} {a}: {da[0]}  {b}: {db[0]}"))
    typer.echo(f"{n} attributes differ")


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)
    app.add_typer(profile_app, name="profile")
