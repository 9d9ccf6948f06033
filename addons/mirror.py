"""Entry point for `mitmdump -s addons/mirror.py`: the meshmirror addon bundle."""

addons: list[object] = []
