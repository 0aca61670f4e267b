"""Institution profiles: TOML files under ``config/profiles/`` that start from a preset.

    extends = "teleradiology"          # a preset (default: basic)
    options = ["retain-safe-private"]  # extra options
    burned_in_policy = "quarantine"    # quarantine | warn | fail
    allow_identifying = ["InstitutionName"]  # the verifier lets these hold identifying values

    [attributes]                       # by keyword or "(gggg,eeee)"
    StudyDescription = "keep"          # keep | remove | empty | dummy | clean | hash | shift | uid
    InstitutionName = { replace = "REMOTE SITE" }

Every mistake is a ConfigError naming the file, the line and the attribute.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag, tag_for_keyword

from pipeline.pixels.rules import POLICIES
from pipeline.deid.profile import PRESETS, Profile, Rule, build_profile
from pipeline.deid.standard import TagPattern
from pipeline.exceptions import ConfigError
from pipeline.settings import config_dir

ACTIONS = {"keep": "K", "remove": "X", "empty": "Z", "dummy": "D", "clean": "C",
           "hash": "H", "shift": "S", "uid": "U"}
_TOP_KEYS = {"extends", "options", "attributes", "description", "burned_in_policy", "allow_identifying"}
_TAG_RE = re.compile(r"^\(?([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)?$")


def profile_path(name: str) -> Path:
    """``config/profiles/NAME.toml``, or ``name`` itself when it is a path to a .toml file."""
    p = Path(name)
    if p.suffix == ".toml" and p.exists():
        return p
    return config_dir() / "profiles" / f"{name}.toml"


def _line_of(text: str, key: str) -> int:
    pat = re.compile(r'^\s*["\']?' + re.escape(key) + r'["\']?\s*=')
    for i, line in enumerate(text.splitlines(), 1):
        if pat.match(line):
            return i
    return 0


def load_profile(name: str = "basic", options: list[str] | tuple[str, ...] | None = None) -> Profile:
    """A preset by name, or ``config/profiles/NAME.toml`` (a site profile), plus extra ``options``."""
    extra = list(options or [])
    key = name.strip().lower()
    if key in PRESETS:
        return build_profile(key, [*PRESETS[key], *extra])
    return load_custom_profile(name, extra)


def load_custom_profile(name: str, extra_options: list[str] | None = None):
    """Load and validate a custom profile; ConfigError names file, line and attribute."""
    path = profile_path(name)
    if not path.exists():
        raise ConfigError(
            f"no profile {name!r}: it is not a preset ({', '.join(PRESETS)}) and {path} does not exist"
        )
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None

    def err(key: str, msg: str) -> ConfigError:
        return ConfigError(f"{path}:{_line_of(text, key)}: {key}: {msg}")

    for k in data:
        if k not in _TOP_KEYS:
            raise err(k, f"unknown setting; allowed: {', '.join(sorted(_TOP_KEYS))}")
    base = str(data.get("extends", "basic")).lower()
    if base not in PRESETS:
        raise err("extends", f"{base!r} is not a preset; choose one of {', '.join(PRESETS)}")
    opts = data.get("options", [])
    if not isinstance(opts, list) or not all(isinstance(o, str) for o in opts):
        raise err("options", "must be a list of option names")
    try:
        profile = build_profile(path.stem, [*PRESETS[base], *opts, *(extra_options or [])])
    except ConfigError as exc:
        raise err("options", str(exc)) from None
    policy = data.get("burned_in_policy")
    if policy is not None:
        if policy not in POLICIES:
            raise err("burned_in_policy", f"must be one of {', '.join(POLICIES)}")
        profile.settings["burned_in_policy"] = policy
    allow = data.get("allow_identifying", [])
    if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
        raise err("allow_identifying", "must be a list of attribute keywords or \"(gggg,eeee)\" tags")
    allowed = []
    for key in allow:
        tag = _parse_attribute(key)
        if tag is None:
            raise err("allow_identifying", f"unknown attribute {key!r}: use a PS3.6 keyword or (gggg,eeee)")
        allowed.append(tag)
    if allowed:  # values the verifier may find captured identifiers in; listed in every report
        profile.settings["allow_identifying"] = tuple(sorted(set(allowed)))
    attrs = data.get("attributes", {})
    if not isinstance(attrs, dict):
        raise err("attributes", "must be a table of attribute = action")
    source = f"profile:{path.name}"
    for key, spec in attrs.items():
        tag = _parse_attribute(key)
        if tag is None:
            raise err(key, "unknown attribute: use a PS3.6 keyword or (gggg,eeee)")
        if (tag >> 16) & 1:
            raise err(key, "private attributes are governed by the retain-safe-private option")
        if tag >> 16 == 0x0002:
            raise err(key, "file meta information is always rebuilt")
        rule = _rule(key, tag, spec, source, err)
        profile.exact[tag] = rule
    profile.source_file = str(path)
    return profile


def _parse_attribute(key: str) -> int | None:
    m = _TAG_RE.match(key.strip())
    if m:
        return int(m.group(1) + m.group(2), 16)
    return tag_for_keyword(key.strip())


def _rule(key: str, tag: int, spec, source: str, err) -> Rule:
    vr = dictionary_VR(tag) if dictionary_has_tag(tag) else None
    label = keyword_for_tag(tag) or key
    pattern = TagPattern(f"({tag >> 16:04X},{tag & 0xFFFF:04X})", 0xFFFFFFFF, tag)
    if isinstance(spec, dict):
        if set(spec) != {"replace"}:
            raise err(key, "a table action must be { replace = \"value\" }")
        value = spec["replace"]
        if not isinstance(value, (str, int, float)) or len(str(value)) > 64:
            raise err(key, "replace needs a string or number of at most 64 characters")
        if vr in ("SQ", "UI"):
            raise err(key, f"cannot replace a {vr} attribute with a constant")
        return Rule(label, pattern, "R", "replace", source, value=str(value))
    if not isinstance(spec, str) or spec not in ACTIONS:
        raise err(key, f"action must be one of {', '.join(ACTIONS)} or {{ replace = \"...\" }}")
    action = ACTIONS[spec]
    if action == "S" and vr not in ("DA", "DT"):
        raise err(key, "shift applies only to DA and DT attributes")
    if action == "U" and vr != "UI":
        raise err(key, "uid applies only to UI attributes")
    if action == "H" and vr not in ("LO", "SH", "PN", "CS", "UC", "LT", "ST", "UT"):
        raise err(key, "hash applies only to text attributes")
    return Rule(label, pattern, action, spec, source)
