"""The model preset and GPU SKU catalogs.

The data lives in the top-level `presets/` folder (YAML, Jinja); this package only reads and
checks it. `load_catalog()` fails fast with the file and entry at fault, so a broken catalog
stops the operator at start instead of surfacing as odd validation results later.
"""

from kaito_operator.catalog.fit import Fit, fit_preset, fit_tuning, nodes_needed
from kaito_operator.catalog.loader import Catalog, CatalogError, load_catalog, presets_dir
from kaito_operator.catalog.models import GpuSku, ModelPreset

__all__ = [
    "Catalog",
    "CatalogError",
    "Fit",
    "GpuSku",
    "ModelPreset",
    "fit_preset",
    "fit_tuning",
    "nodes_needed",
    "load_catalog",
    "presets_dir",
]
