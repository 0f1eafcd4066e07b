"""Command-line overrides (`model.lr=0.1`, `+trainer.x=1`, `~key`, `model=vae`) read by one
parser, Hydra's own, wherever vnnlab needs their keys: a resume's allowed overrides, a sweep's
job names, a run's name."""

from collections.abc import Iterable
from functools import cache

from hydra.core.override_parser.overrides_parser import OverridesParser


@cache
def _parser() -> OverridesParser:
    return OverridesParser.create()


def override_key(override: str) -> str:
    """The key (or config group) an override sets: `+model.lr=1` → `model.lr`."""
    return _parser().parse_override(override).key_or_group


def with_keys(overrides: Iterable[str], keys: Iterable[str]) -> list[str]:
    """The overrides that set one of `keys`, in their order."""
    wanted = set(keys)
    return [override for override in overrides if override_key(override) in wanted]
