"""Public holidays of one country, from the `holidays` package, loading that country alone.

`holidays.country_holidays` (and `list_supported_countries`) import the package's module of
every country, about 300 modules and 14 MB in each process that computes deadlines or checks
the config (the daemon and each decision process). Here the country's own module is loaded
from the package's registry of names (`holidays.registry.COUNTRIES`); a country whose module
is not where the registry says goes through `country_holidays`, with the same answer.
"""

from __future__ import annotations

import functools
import importlib.util
from datetime import date
from pathlib import Path
from typing import Any

__all__ = ["dates", "supported"]


def supported(code: str) -> bool:
    """Whether `code` names a country the `holidays` package knows (ISO 3166 alpha-2 or
    alpha-3, or an alias such as UK): the keys of `holidays.list_supported_countries()`."""
    from holidays.registry import EntityLoader

    return code in set(EntityLoader.get_country_codes())


def dates(code: str, year: int) -> frozenset[date]:
    """The public holidays of country `code` in `year`."""
    entity = _entity(code)
    if entity is None:
        import holidays

        return frozenset(holidays.country_holidays(code, years=year).keys())
    return frozenset(entity(years=year).keys())


@functools.cache
def _entity(code: str) -> Any:
    """The holidays class of country `code` from its own module (None: not found there)."""
    import holidays
    from holidays.registry import COUNTRIES

    for module, names in COUNTRIES.items():
        if code in names[1:]:
            break
    else:
        return None
    package = Path(holidays.__file__).parent
    path = package / "countries" / f"{module}.py"
    spec = importlib.util.spec_from_file_location(f"holidays.countries.{module}", path)
    if spec is None or spec.loader is None or not path.is_file():
        return None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return getattr(loaded, names[0], None)
