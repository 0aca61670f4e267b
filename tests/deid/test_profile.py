"""Profiles: presets, option names, conflicts and what describe() records for the manifest."""

from __future__ import annotations

import pytest

from pipeline.deid import ALL_OPTIONS, PRESETS, load_profile
from pipeline.exceptions import ConfigError


def test_basic_describe_names_profile_codes_and_edition():
    """describe() gives the manifest the profile, options, CID 7050 codes and edition."""
    d = load_profile("basic").describe()
    assert d["profile"] == "basic" and d["options"] == []
    assert [c["code_value"] for c in d["codes"]] == ["113100"]
    assert d["edition"] == "2026d"


def test_teleradiology_preset_codes():
    """The teleradiology preset records each of its options' CID 7050 code."""
    d = load_profile("teleradiology").describe()
    assert set(d["options"]) == set(PRESETS["teleradiology"])
    assert {c["code_value"] for c in d["codes"]} == {"113100", "113108", "113109", "113105", "113107"}


@pytest.mark.parametrize("name", ["Retain_UIDs", "retain uids", "RETAIN-UIDS"])
def test_option_spellings(name):
    """Options are accepted in the spellings users type."""
    assert load_profile("basic", [name]).options == ("retain-uids",)


def test_unknown_option_and_date_conflict_are_refused():
    """An unknown option, or Full with Modified Dates, is a ConfigError that says why."""
    with pytest.raises(ConfigError, match="unknown de-identification option"):
        load_profile("basic", ["retain-everything"])
    with pytest.raises(ConfigError, match="cannot be used together"):
        load_profile("basic", ["retain-long-full-dates", "retain-long-modified-dates"])


def test_unknown_profile_is_refused():
    """A name that is neither a preset nor a file under config/profiles is a ConfigError."""
    with pytest.raises(ConfigError, match="no profile"):
        load_profile("no-such-profile")


def test_every_option_loads():
    """Every option name can be used on its own."""
    for o in ALL_OPTIONS:
        assert load_profile("basic", [o]).options == (o,)


def test_profile_show_calls_modified_dates_a_shift_as_the_dry_run_does():
    """Under Modified Dates a date's action reads "shift date" (the dry run counts it as shifted), not "clean"."""
    rows = {r["attribute"]: r for r in load_profile("teleradiology").effective_actions()}
    assert rows["StudyDate"]["action"] == "shift date"
    assert rows["StudyDescription"]["action"] == "clean"  # a descriptor is still cleaned
