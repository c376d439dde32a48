"""Entry point for ``kopf run -m kubemaas_operator.main``.

kopf imports this module and runs whatever it registered into its default registry, so
this is the one module that registers at import (settings come from KUBEMAAS_* env vars).
``kubemaas operator`` (kubemaas_operator.cli) does the same into a fresh registry.
"""

from __future__ import annotations

import kopf

from kubemaas_operator.controllers import register
from kubemaas_operator.settings import OperatorSettings

register(kopf.get_default_registry(), OperatorSettings())
