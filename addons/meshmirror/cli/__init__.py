"""The `meshmirror` command: `main.py` parses and dispatches; each command lives in the module
of its concern (checking configs, the outcome report, running the proxy)."""
