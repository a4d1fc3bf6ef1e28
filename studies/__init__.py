"""Studies: one short file per paper figure or table, registered by name on import.

The schema (``Study``, ``Arm``, ``Claim``, ``expand``, ``resolve``) lives in
``weaklab.study``; this package holds only the study files. Its names are re-exported here
so that ``from studies import STUDIES, expand`` both finds the schema and registers every
study. Run one as ``weaklab run NAME`` or ``python -m studies.NAME``.
"""

from weaklab.registry import import_submodules
from weaklab.study import (STUDIES, Arm, Study, expand, get_study, parse_sets, register_study,  # noqa: F401
                           resolve)

import_submodules(__name__, __path__)
