"""Region rules as data (config/deid/pixels.toml): applied before OCR with Clean Pixel Data, checked on load."""

from __future__ import annotations

import shutil

import pytest

from pipeline.deid import Deidentifier, load_profile
from pipeline.exceptions import ConfigError
from pipeline.settings import config_dir
from tests.pixels.images import Identity, Label, identity_labels, make_image

RULE = '''
[[rule]]
name = "ACME Sono X1 bottom-right clock"
manufacturer = "ACME SONO"
model = "X1"
rows = 480
columns = 640
rectangles = [[480, 430, 160, 50]]
source = "site survey of the X1's screen layout, 2026-11"
'''


@pytest.fixture
def site_config(tmp_path):
    root = tmp_path / "config"
    shutil.copytree(config_dir(), root)
    with open(root / "deid" / "pixels.toml", "a") as fh:
        fh.write(RULE)
    return root


def test_a_matching_rule_is_masked_before_ocr_and_named_in_the_outcome(tmp_path, pseudonyms, site_config):
    """With Clean Pixel Data the rule's rectangle is masked on every frame; OCR masks the text elsewhere."""
    who = Identity(tag="RLSTX")
    drawn = make_image(tmp_path / "in.dcm", who=who, frames=2,
                       labels=identity_labels(who, where="bottom") + [Label("12:41:07", 500, 440, 16)])
    import pydicom

    ds = pydicom.dcmread(drawn.path)
    ds.Manufacturer, ds.ManufacturerModelName = "Acme Sono GmbH", "X1 Pro"
    ds.save_as(drawn.path)
    deid = Deidentifier(load_profile("teleradiology", ["clean-pixel-data"]), pseudonyms, config_root=site_config)
    res = deid.deidentify_file(drawn.path, tmp_path / "out")
    assert res.pixels.rules == ["Generic ultrasound top banner 640x480", "ACME Sono X1 bottom-right clock"]
    assert (0, 480, 430, 160, 50) in res.masked_regions and (1, 480, 430, 160, 50) in res.masked_regions
    assert any(r[1] < 300 and r[2] > 380 for r in res.masked_regions), "OCR masked the identifiers too"
    plain = Deidentifier(load_profile("teleradiology"), pseudonyms, config_root=site_config)
    without = plain.deidentify_file(drawn.path, tmp_path / "out2")
    assert without.pixels.rules == [] and (0, 480, 430, 160, 50) not in without.masked_regions


def test_a_broken_rule_is_a_config_error_naming_the_file(tmp_path, pseudonyms, site_config):
    """A rectangle with three numbers stops the engine from starting, naming pixels.toml and the rule."""
    path = site_config / "deid" / "pixels.toml"
    path.write_text(path.read_text().replace("[[480, 430, 160, 50]]", "[[480, 430, 160]]"))
    with pytest.raises(ConfigError, match=r"pixels.toml: invalid \[\[rule\]\] 'ACME Sono X1 bottom-right clock'"):
        Deidentifier(load_profile("teleradiology"), pseudonyms, config_root=site_config)
    path.write_text(path.read_text().replace('policy = "mask"', 'policy = "blur"'))
    with pytest.raises(ConfigError, match="policy must be one of mask, quarantine, warn, fail"):
        Deidentifier(load_profile("teleradiology"), pseudonyms, config_root=site_config)


def test_a_site_listed_sop_class_is_examined_even_when_flagged_no(tmp_path, pseudonyms, site_config):
    """BurnedInAnnotation NO is believed, except for SOP classes the site lists in site_sop_classes."""
    who = Identity(tag="STLSX")
    drawn = make_image(tmp_path / "in.dcm", kind="XA", rows=512, cols=512, who=who, burned_in="NO",
                       labels=identity_labels(who, cols=512, rows=512))
    believed = Deidentifier(load_profile("teleradiology"), pseudonyms, config_root=site_config)
    assert believed.deidentify_file(drawn.path, tmp_path / "a").pixels is None
    path = site_config / "deid" / "pixels.toml"
    path.write_text(path.read_text().replace("site_sop_classes = []",
                                             'site_sop_classes = ["1.2.840.10008.5.1.4.1.1.12.1"]'))
    listed = Deidentifier(load_profile("teleradiology"), pseudonyms, config_root=site_config)
    res = listed.deidentify_file(drawn.path, tmp_path / "b")
    assert res.pixels.reason == "the site lists its SOP class for examination" and res.pixels.action == "masked"
