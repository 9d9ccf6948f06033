"""The addon bundle as mitmproxy loads a script, from an installed package:

    mitmdump --mode reverse:http://PRIMARY -s "$(meshmirror addon-path)" --set mirror_config=DIR

(`addons/mirror.py` is the same entry inside a checkout.) mitmproxy runs this file by path and
takes the addons from its `addons` list.
"""

from meshmirror.mitm.addon import Mirror

addons = [Mirror()]
