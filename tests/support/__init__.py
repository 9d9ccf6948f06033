"""Helpers shared by the end-to-end tests and by scripts/demo.py, scripts/soak.py and
scripts/bench.py: processes (start, stop, wait, /proc readings), misbehaving servers, ports,
mitmdump with the addon, mesh configs and the addon's summary line.

Everything binds 127.0.0.1; a server binds port 0 itself and reports the port it got.
"""
