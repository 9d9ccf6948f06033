"""Entry point for `mitmdump -s addons/mirror.py` inside a checkout: the meshmirror addon bundle.

The logic lives in the `meshmirror` package next to this file (installed editable by
scripts/setup; mitmproxy also puts this directory on sys.path while loading the script). From an
installed package, `meshmirror addon-path` prints the path of the same entry inside it.
"""

from meshmirror.mitm.addon import Mirror

addons = [Mirror()]
