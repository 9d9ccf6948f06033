"""Helpers shared by the end-to-end tests and by scripts/demo.py, scripts/soak.py and
scripts/bench.py: processes (start, stop, wait, /proc readings), misbehaving servers, ports,
mitmdump with the addon, `meshmirror run`, mesh configs and the addon's summary line, and a
headless Chromium for the pages (mitmweb, the report).

Everything binds 127.0.0.1; a server binds port 0 itself and reports the port it got.
"""
