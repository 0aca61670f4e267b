"""Typed settings: defaults from ``config/default.toml``, overrides from ``TELERAD_*``.

Everything Telerad writes at run time lives under one folder, ``TELERAD_HOME``,
so two installations never collide and a test isolates itself by pointing
``TELERAD_HOME`` at a temporary folder. Secrets are never settings values that
get logged: they live in files under ``TELERAD_HOME/secrets`` (mode 0600),
created on first use, unless a path to an existing file is configured.
"""

from __future__ import annotations

import os
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pipeline.exceptions import ConfigError
from pipeline.limits import InflateLimits
from pipeline.locations import check_intake_apart, check_mapping_apart

REPO_ROOT = Path(__file__).resolve().parent.parent


def config_dir() -> Path:
    """The folder holding default.toml, profiles and word lists (TELERAD_CONFIG_DIR overrides)."""
    return Path(os.environ.get("TELERAD_CONFIG_DIR") or REPO_ROOT / "config")


def default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "telerad"


class Priority(str, Enum):
    """Submission priority; STAT is read first. The one place the order is written: highest first."""

    STAT = "STAT"
    URGENT = "URGENT"
    ROUTINE = "ROUTINE"

    @property
    def rank(self) -> int:
        """0 for STAT, 1 for URGENT, 2 for ROUTINE: sort by it to put the most urgent first."""
        return list(Priority).index(self)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The priorities' names, highest first."""
        return tuple(p.value for p in cls)

    @classmethod
    def rank_of(cls, name: str) -> int:
        """The rank of a priority's name; an unknown name ranks after every priority."""
        try:
            return cls(name).rank
        except ValueError:
            return len(cls)

    @property
    def celery_priority(self) -> int:
        """Redis priority step (0 is served first)."""
        return {"STAT": 0, "URGENT": 3, "ROUTINE": 6}[self.value]


class Settings(BaseSettings):
    """All of Telerad's configuration, validated once at start-up."""

    model_config = SettingsConfigDict(env_prefix="TELERAD_", extra="ignore")

    home: Path = Field(default_factory=default_home, description="Root of all run-time state.")
    organization: str = Field("TELERAD", description="Prefix of cloud study and patient pseudonyms.")
    broker_url: str = Field("", description="Celery broker; empty = embedded filesystem broker.")
    store_url: str = Field("", description="Upload target; empty = local folder bucket.")
    key_prefix: str = Field("", description="Prefix inside the store before BATCH_ID/.")
    s3_endpoint_url: str = Field("", description="S3-compatible endpoint URL.")
    mapping_url: str = Field("", description="Encrypted mapping store; empty = local folder.")
    staging_dir: str = Field("", description="De-identified files wait here until uploaded.")
    profile: str = Field("teleradiology", description="De-identification preset or profile file.")
    options: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Extra Annex E options (comma-separated in the environment)."
    )
    upload_concurrency: int = Field(8, ge=1, le=64)
    default_priority: Priority = Priority.ROUTINE
    visibility_timeout: int = Field(
        3600, ge=5, description="Seconds before Redis redelivers a task whose worker vanished."
    )
    task_max_retries: int = Field(
        8, ge=0, le=100,
        description="Retries of a step after a transient failure (each after the SDK's own retries).",
    )
    task_retry_backoff_max: float = Field(60.0, ge=0, description="Longest pause between step retries, seconds.")
    allow_mixed_patients: bool = Field(False, description="Accept a study holding two patients.")
    # --- reading input (nothing lost, nothing unbounded) ---------------------------------
    deflated_max_bytes: int = Field(
        256 * 2**20, ge=2**20,
        description="Largest size a Deflated Explicit VR Little Endian dataset may inflate to.",
    )
    deflated_max_ratio: int = Field(200, ge=2, description="Largest inflation ratio of a deflated dataset over 16 MB.")
    queued_stale_seconds: int = Field(
        300, ge=1, description="A batch queued this long with no worker taking it is shown as stale.",
    )
    # --- storage transfers -------------------------------------------------------------
    azure_account_url: str = Field("", description="Azure blob account URL for DefaultAzureCredential.")
    part_concurrency: int = Field(4, ge=1, le=64, description="Parallel parts of one large object.")
    multipart_threshold: int = Field(16 * 2**20, ge=5 * 2**20, description="Bytes above which uploads go in parts.")
    multipart_chunksize: int = Field(16 * 2**20, ge=5 * 2**20, description="Size of one upload part.")
    storage_max_attempts: int = Field(6, ge=1, le=20, description="Tries in all for one storage call.")
    s3_retry_mode: str = Field("standard", pattern="^(standard|adaptive|legacy)$")
    azure_initial_backoff: float = Field(2.0, gt=0, description="First Azure retry delay, seconds.")
    # --- inbox -----------------------------------------------------------------------
    inbox_dir: str = Field("", description="Inbox for `telerad watch`/`up` when none is given.")
    inbox_quiet_seconds: float = Field(10.0, ge=0, description="A study is complete after this long unchanged.")
    inbox_ready_marker: str = Field(".ready", description="A file whose presence marks a study complete.")
    inbox_polling: bool = Field(False, description="Poll instead of inotify (network shares).")
    inbox_scan_interval: float = Field(1.0, gt=0, description="Seconds between rescans of the inbox.")
    inbox_archive_days: int = Field(30, ge=0, description="Days an uploaded original stays in archive/.")
    inbox_delete_after_upload: bool = Field(False, description="Delete originals once uploaded instead of archiving.")
    zip_max_entries: int = Field(50000, ge=1)
    zip_max_unpacked_bytes: int = Field(32 * 2**30, ge=1)
    zip_max_ratio: float = Field(200.0, gt=1, description="Largest compression ratio accepted (zip bombs).")
    # --- DICOM network (issue 16): `telerad listen` (Storage SCP) and delivery by C-STORE ---
    listen_port: int = Field(0, ge=0, le=65535, description="Storage SCP port; 0 = no listener (`telerad up` starts one when set).")
    listen_host: str = Field("127.0.0.1", description="Address the listener binds: loopback unless set.")
    listen_ae_title: str = Field("TELERAD", min_length=1, max_length=16, description="The listener's own AE title.")
    listen_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Calling AE titles accepted (comma-separated); empty = any (loopback only)."
    )
    listen_stable_seconds: float = Field(30.0, ge=0, description="A study is complete after this long with no new instance.")
    listen_spool_dir: str = Field("", description="Received instances wait here; empty = TELERAD_HOME/listen.")
    listen_min_free_bytes: int = Field(
        64 * 2**20, ge=0, description="Answer 'out of resources' when the spool would have less free space than this."
    )
    listen_priority_by_ae: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="Calling AE title -> priority, e.g. 'CT_STAT=STAT,ER=URGENT'."
    )
    listen_priority_rules: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Attribute rules 'Keyword=PATTERN:PRIORITY' (fnmatch, comma-separated), e.g. 'StudyDescription=*TRAUMA*:STAT'.",
    )
    listen_tls_cert_file: str = Field("", description="PEM certificate of the listener; with the key, TLS is on.")
    listen_tls_key_file: str = Field("", description="PEM private key of the listener.")
    listen_tls_ca_file: str = Field("", description="CA bundle; when set, callers must present a certificate it signed.")
    send_ae_title: str = Field("TELERAD", min_length=1, max_length=16, description="Calling AE title when delivering to a PACS.")
    send_attempts: int = Field(4, ge=1, le=20, description="Tries in all for an instance the PACS did not store.")
    send_retry_pause: float = Field(2.0, ge=0, description="First pause between delivery tries, seconds (doubles).")
    # --- keys -----------------------------------------------------------------------
    mapping_kms_key_id: str = Field("", description="AWS KMS key (ID, ARN or alias) wrapping mapping keys; empty = local key file.")
    audit_mirror: bool = Field(False, description="Also write each audit entry to the mapping store under audit/.")
    signing_key_file: str = Field("", description="Ed25519 organisation key; empty = generated.")
    public_key_file: str = Field("", description="Organisation public key a reader checks manifests with.")
    pseudonym_secret_file: str = Field("", description="HMAC secret file; empty = generated.")
    mapping_key_file: str = Field("", description="Mapping key-encryption key file; empty = generated.")
    # --- HTTP gateway and web console (`telerad serve`, issue 17) ---------------------------
    gateway_host: str = Field("127.0.0.1", description="Address `telerad serve` listens on (loopback by default).")
    gateway_port: int = Field(8760, ge=1, le=65535, description="Port `telerad serve` listens on.")
    gateway_max_file_bytes: int = Field(
        512 * 2**20, ge=1024, description="Largest single DICOM file accepted by anonymize-stream and the review step."
    )
    gateway_max_upload_bytes: int = Field(
        8 * 2**30, ge=1024, description="Largest study upload (ZIP, multipart files or a STOW-RS body)."
    )
    gateway_rate_per_minute: int = Field(600, ge=1, description="Requests per minute allowed per API key (or per client without one).")
    gateway_path_roots: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Server folders a batch may be submitted from by path (comma-separated); empty = none.",
    )
    gateway_targets: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=lambda: {"STAT": 300, "URGENT": 1800, "ROUTINE": 14400},
        description="Seconds from submission to the store each priority aims at (the console's 'waiting vs target').",
    )
    # --- beyond one machine (issue 18): shared state, step leases, intake store ----------
    state_url: str = Field(
        "", description="Shared batch state: postgresql://... or redis://...; empty = JSON files under TELERAD_HOME."
    )
    host_id: str = Field(
        "", description="This host's name in the shared state, in `telerad status` and in its queue; empty = hostname."
    )
    lease_seconds: float = Field(
        15.0, ge=1, le=600, description="A running step's lease; a holder silent this long is taken to be dead."
    )
    lease_sweep_seconds: float = Field(
        5.0, gt=0, le=300, description="How often each worker renews its host heartbeat and looks for orphaned batches."
    )
    intake_url: str = Field(
        "", description="On-site store of encrypted originals in flight (s3://... or file://...); empty = read the source in place."
    )
    fanout_files: int = Field(
        0, ge=0, description="Studies of at least this many files are de-identified in chunks by several workers; 0 = never."
    )
    fanout_chunk_files: int = Field(200, ge=1, description="Files in one fan-out chunk.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_dir() / "default.toml")
        return (init_settings, env_settings, toml)

    @field_validator("organization")
    @classmethod
    def _org_is_a_safe_prefix(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_" for c in v) or len(v) > 16:
            raise ValueError(
                "organization must be 1-16 letters, digits, '-' or '_' (it prefixes pseudonyms)"
            )
        return v.upper()

    @field_validator("home", mode="before")
    @classmethod
    def _home_default_when_empty(cls, v: Any) -> Any:
        return v or default_home()

    @field_validator("gateway_targets", mode="before")
    @classmethod
    def _targets_from_text(cls, v: Any) -> Any:
        if isinstance(v, str):  # "STAT=300,URGENT=1800,ROUTINE=14400"
            return {k.strip().upper(): int(n) for k, _, n in (p.partition("=") for p in v.split(",")) if k.strip()}
        return v

    @field_validator("options", "gateway_path_roots", mode="before")
    @classmethod
    def _options_from_csv(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [o.strip() for o in v.split(",") if o.strip()]
        return v

    @field_validator("listen_allow", "listen_priority_rules", mode="before")
    @classmethod
    def _list_from_csv(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [o.strip() for o in v.split(",") if o.strip()]
        return v

    @field_validator("listen_priority_by_ae", mode="before")
    @classmethod
    def _ae_priorities_from_csv(cls, v: Any) -> Any:
        if isinstance(v, str):
            pairs = [p.strip() for p in v.split(",") if p.strip()]
            if any("=" not in p for p in pairs):
                raise ValueError("write AE=PRIORITY pairs separated by commas, e.g. CT_STAT=STAT,ER=URGENT")
            v = dict(p.split("=", 1) for p in pairs)
        if isinstance(v, dict):
            out = {}
            for ae, prio in v.items():
                if str(prio).strip().upper() not in Priority.__members__:
                    raise ValueError(f"priority for AE {ae!r} must be STAT, URGENT or ROUTINE, not {prio!r}")
                out[str(ae).strip()] = str(prio).strip().upper()
            return out
        return v

    @model_validator(mode="after")
    def _mapping_store_is_not_in_the_bucket(self) -> "Settings":
        check_mapping_apart(self.effective_store_url, self.effective_mapping_url)
        return self

    @model_validator(mode="after")
    def _intake_store_is_not_in_the_bucket(self) -> "Settings":
        if self.intake_url:
            check_intake_apart(self.effective_store_url, self.intake_url)
        return self

    @property
    def effective_host_id(self) -> str:
        """This host's name: ``host_id``, or the machine's host name."""
        import socket

        return self.host_id or socket.gethostname()

    # --- derived locations -------------------------------------------------------
    @property
    def effective_store_url(self) -> str:
        return self.store_url or (self.home / "bucket").resolve().as_uri()

    @property
    def effective_mapping_url(self) -> str:
        return self.mapping_url or (self.home / "mapping").resolve().as_uri()

    @property
    def staging_root(self) -> Path:
        return Path(self.staging_dir) if self.staging_dir else self.home / "staging"

    @property
    def listen_spool(self) -> Path:
        """Where `telerad listen` keeps received instances until their study is submitted."""
        return Path(self.listen_spool_dir) if self.listen_spool_dir else self.home / "listen"

    @property
    def state_dir(self) -> Path:
        """Persistent batch state (survives restarts of workers and watchers)."""
        return self.home / "state"

    @property
    def spool_dir(self) -> Path:
        """Uploads received by the gateway, kept until their batch no longer needs them."""
        return self.home / "spool"

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    @property
    def review_dir(self) -> Path:
        """Images held for a person's decision about burned-in text (``telerad review``)."""
        return self.home / "review"

    @property
    def audit_log_path(self) -> Path:
        return self.home / "audit" / "audit.jsonl"

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url

    @property
    def broker_dir(self) -> Path:
        return self.home / "broker"

    @property
    def inflate_limits(self) -> InflateLimits:
        """How far a deflated dataset may inflate (``TELERAD_DEFLATED_MAX_*``)."""
        return InflateLimits(max_bytes=self.deflated_max_bytes, max_ratio=self.deflated_max_ratio)

    @cached_property
    def pseudonym_secret(self) -> bytes:
        """The HMAC key behind every pseudonym; generated (0600) on first use."""
        from pipeline.secrets import load_or_create_secret

        path = Path(self.pseudonym_secret_file) if self.pseudonym_secret_file else (
            self.secrets_dir / "pseudonym.key"
        )
        return load_or_create_secret(path, create=not self.pseudonym_secret_file)

    def ensure_dirs(self) -> None:
        for d in (self.home, self.staging_root, self.state_dir, self.secrets_dir):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.secrets_dir, 0o700)


def default_settings() -> Settings:
    """Settings with every default and nothing from the environment (library callers with no settings)."""
    return Settings.model_construct()


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning validation errors into one clear ConfigError."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("invalid Telerad settings:\n  " + "\n  ".join(lines)) from None
