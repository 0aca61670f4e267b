"""`telerad keys status`, `rotate` and `public`: the mapping store's keys and the signing key's public half."""

from __future__ import annotations

import getpass
from typing import Optional

import typer

from pipeline.cli.common import shown
from pipeline.exceptions import TeleradError

keys_app = typer.Typer(
    name="keys",
    help="Key-encryption keys of the re-identification mapping store.",
    no_args_is_help=True,
)


def _fail(exc: TeleradError) -> typer.Exit:
    typer.secho(f"error: {shown(exc, keep_newlines=True)}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


@keys_app.command("status")
def status(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show the current key, the keys the keyring holds, and which keys the stored mappings use."""
    from pipeline.mapping import MappingStore, pending_mapping_store
    from pipeline.settings import load_settings

    try:
        settings = load_settings()
        store = MappingStore.from_settings(settings)
        usage = store.key_usage()
        pending_usage = pending_mapping_store(settings, store.keyring).key_usage()
    except TeleradError as exc:
        raise _fail(exc) from None
    keyring = store.keyring
    unreadable_refs = [ref for ref in usage if keyring.find(ref) is None]
    if as_json:
        import json

        typer.echo(json.dumps({
            "mapping_store": store.store.url,
            "current_key": {"provider": keyring.current.ref.provider, "ref": str(keyring.current.ref)},
            "keyring": [{"provider": ref.provider, "ref": str(ref)} for ref in keyring.refs],
            "mappings_by_key": [
                {"provider": ref.provider, "ref": str(ref), "batches": len(batches),
                 "current": ref == keyring.current.ref, "in_keyring": keyring.find(ref) is not None}
                for ref, batches in sorted(usage.items(), key=lambda kv: str(kv[0]))
            ],
        }, indent=2))
        if unreadable_refs:
            raise typer.Exit(1)
        return
    typer.echo(f"mapping store: {shown(store.store.url)}")
    typer.echo(f"current key:   {keyring.current.ref.provider} {keyring.current.ref}")
    typer.echo("keyring:")
    for ref in keyring.refs:
        typer.echo(f"  {ref.provider:8} {ref}")
    typer.echo("mappings by key:")
    if not usage:
        typer.echo("  (no mappings stored)")
    unreadable = _print_usage(usage, keyring)
    pending = sum(len(b) for b in pending_usage.values())
    typer.echo(f"pending copies (batches not finished, in state/pending-mappings): {pending}")
    unreadable += _print_usage(pending_usage, keyring)
    if unreadable:
        raise typer.Exit(1)


def _print_usage(usage: dict, keyring) -> int:
    """One line per key with its number of mappings; returns how many cannot be read."""
    unreadable = 0
    for ref, batches in sorted(usage.items(), key=lambda kv: str(kv[0])):
        note = ""
        if ref == keyring.current.ref:
            note = "  (current)"
        elif keyring.find(ref) is None:
            note = "  (NOT IN KEYRING: these mappings cannot be read)"
            unreadable += len(batches)
        elif ref.provider != "unreadable":
            note = "  (older key: run `telerad keys rotate`)"
        typer.echo(f"  {ref.provider:8} {ref}: {len(batches)}{note}")
    return unreadable


@keys_app.command("rotate")
def rotate(
    new_key: bool = typer.Option(
        True, "--new-key/--no-new-key",
        help="Add a new local key version first (--no-new-key: finish re-wrapping under the current key). "
        "With a KMS key configured, records are re-wrapped under it and KMS rotates its own key material.",
    ),
    retire: bool = typer.Option(
        False, "--retire",
        help="Afterwards, remove local key versions no mapping uses any more (stop workers first).",
    ),
    actor: Optional[str] = typer.Option(None, "--actor", help="Who is rotating (default: your login name)."),
) -> None:
    """Re-wrap every mapping's data key under a new key-encryption key (the data is not re-encrypted)."""
    from pipeline.audit import AuditLog
    from pipeline.mapping import Keyring, MappingStore, pending_mapping_store
    from pipeline.mapping.keys import LOCAL
    from pipeline.settings import load_settings

    actor = actor or getpass.getuser()
    try:
        settings = load_settings()
        audit = AuditLog.from_settings(settings)
        store = MappingStore.from_settings(settings)
        keyring = store.keyring
        if new_key and keyring.current.ref.provider == LOCAL:
            keyring.local_file.add_version()
            keyring = Keyring.from_settings(settings)
            typer.echo(f"new key: {keyring.current.ref}")
        pending = pending_mapping_store(settings, store.keyring)
        report = store.rotate(keyring)
        pending_report = pending.rotate(keyring)  # copies of unfinished batches: same key as the rest
        report.rewrapped += pending_report.rewrapped
        report.already_current += pending_report.already_current
        report.failed.update({f"{b} (pending copy)": why for b, why in pending_report.failed.items()})
        retired: list[int] = []
        if retire and keyring.local_file is not None and report.ok:
            in_use = {r.version for r in [*store.key_usage(), *pending.key_usage()] if r.provider == LOCAL}
            old = [r.version for r in keyring.refs if r.provider == LOCAL and r.version not in in_use]
            retired = keyring.local_file.retire([v for v in old if v is not None])
        ref = keyring.current.ref
        audit.append(
            "keys.rotate", actor=actor, outcome="ok" if report.ok else "partial",
            key_provider=ref.provider, key_id=ref.key_id, key_version=ref.version,
            rewrapped=report.rewrapped, already_current=report.already_current,
            failed=len(report.failed), retired_versions=retired,
        )
    except TeleradError as exc:
        raise _fail(exc) from None
    typer.echo(
        f"re-wrapped {report.rewrapped} mapping(s) under {ref}; "
        f"{report.already_current} already used it"
    )
    if retired:
        typer.echo("retired key versions: " + ", ".join(f"v{v}" for v in retired))
    for batch_id, why in sorted(report.failed.items()):
        typer.secho(f"not re-wrapped: {shown(batch_id)}: {shown(why)}", fg=typer.colors.RED, err=True)
    if report.failed:
        typer.secho(
            f"{len(report.failed)} mapping(s) could not be re-wrapped; fix their keys and run "
            "`telerad keys rotate --no-new-key`", fg=typer.colors.RED, err=True,
        )
        raise typer.Exit(1)


@keys_app.command("public")
def public(
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Write the PEM to this file instead of stdout."),
) -> None:
    """Print the organisation's public signing key (PEM): what a reader needs to check manifests."""
    from pathlib import Path

    from pipeline.settings import load_settings
    from pipeline.signing import export_public_key, fingerprint, load_public_key, public_key_pem

    settings = load_settings()
    try:
        if out:
            path = export_public_key(settings, Path(out))
            key = load_public_key(path)
            typer.echo(f"wrote {path} (fingerprint {fingerprint(key)})", err=True)
        else:
            typer.echo(public_key_pem(settings).decode(), nl=False)
    except TeleradError as exc:
        raise _fail(exc) from exc


api_app = typer.Typer(name="api", help="API keys of the HTTP gateway (`telerad serve`).", no_args_is_help=True)
keys_app.add_typer(api_app, name="api")


@api_app.command("create")
def api_create(
    scope: str = typer.Option(..., "--scope", help="Comma-separated: submit, read, reidentify."),
    label: str = typer.Option("", "--label", help="What the key is for (no PHI), e.g. 'RIS uploader'."),
    actor: Optional[str] = typer.Option(None, "--actor", help="Who is creating it (default: your login name)."),
) -> None:
    """Make a new API key; it is printed once, on the last line, and stored only as a hash."""
    from pipeline.audit import AuditLog
    from pipeline.gateway.apikeys import ApiKeyStore, parse_scopes
    from pipeline.settings import load_settings

    try:
        settings = load_settings()
        settings.ensure_dirs()
        record, key = ApiKeyStore.from_settings(settings).create(parse_scopes(scope), label=label)
        AuditLog.from_settings(settings).append("keys.api.create", actor=actor or getpass.getuser(),
                                                key_id=record.key_id, scopes=list(record.scopes))
    except TeleradError as exc:
        raise _fail(exc) from None
    typer.echo(f"API key {record.key_id} with scopes {','.join(record.scopes)}; it is shown only now:", err=True)
    typer.echo(key)


@api_app.command("list")
def api_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """The gateway's API keys: ID, scopes, label, when made (never the keys)."""
    from pipeline.cli.common import print_table
    from pipeline.gateway.apikeys import ApiKeyStore
    from pipeline.settings import load_settings

    keys = ApiKeyStore.from_settings(load_settings()).all()
    rows = [{"key_id": k.key_id, "scopes": ",".join(k.scopes), "label": k.label, "created_at": k.created_at}
            for k in keys]
    if as_json:
        import json

        typer.echo(json.dumps(rows, indent=2))
        return
    print_table(["key_id", "scopes", "label", "created_at"], [list(r.values()) for r in rows],
                empty="no API keys; make one with `telerad keys api create --scope submit,read`")


@api_app.command("revoke")
def api_revoke(
    key_id: str = typer.Argument(..., help="The key's ID (from `telerad keys api list`)."),
    actor: Optional[str] = typer.Option(None, "--actor", help="Who is revoking it (default: your login name)."),
) -> None:
    """Revoke an API key at once (a running gateway rereads the key file)."""
    from pipeline.audit import AuditLog
    from pipeline.gateway.apikeys import ApiKeyStore
    from pipeline.settings import load_settings

    settings = load_settings()
    if not ApiKeyStore.from_settings(settings).revoke(key_id):
        typer.secho(f"error: no API key {shown(key_id)}; `telerad keys api list` shows them", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    AuditLog.from_settings(settings).append("keys.api.revoke", actor=actor or getpass.getuser(), key_id=key_id)
    typer.echo(f"revoked {shown(key_id)}")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
