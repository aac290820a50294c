"""pytest's set-up for the whole project: the docstring examples of modules whose optional extra is missing are skipped.

The tests themselves skip such cases with ``pytest.importorskip``; a module that cannot be imported at all
without its extra (``finvae/_skfolio.py``) would otherwise stop the collection of every doctest.
"""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("skfolio") else ["finvae/_skfolio.py"]
