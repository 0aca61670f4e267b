"""The one place the de-identification engine is built: the recipe's profile and keys, the site's limits.

Every door used to build its own ``Deidentifier`` and two of them forgot the
site's deflate limits (``TELERAD_DEFLATED_MAX_BYTES`` / ``_RATIO``). Here the
engine always reads through the bounded reader with the limits from Settings,
and holds doubtful burned-in images in the site's review folder when asked.
"""

from __future__ import annotations

from pipeline.deid import Deidentifier, Profile, load_profile
from pipeline.pseudonyms import Pseudonyms
from pipeline.run.recipe import Recipe
from pipeline.settings import Settings


def load(recipe: Recipe) -> Profile:
    """The recipe's profile with its options; raises the profile's own error when either is wrong."""
    return load_profile(recipe.profile, options=list(recipe.options))


def build_engine(settings: Settings, recipe: Recipe) -> Deidentifier:
    """A ``Deidentifier`` for ``recipe``, reading within the site's limits."""
    return Deidentifier(
        load(recipe),
        Pseudonyms(settings.pseudonym_secret, recipe.organization),
        overrides=recipe.override_map or None,
        inflate_limits=settings.inflate_limits,
        review_dir=settings.review_dir if recipe.hold_for_review else None,
    )
