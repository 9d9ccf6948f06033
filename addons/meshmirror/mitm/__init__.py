"""The only code that imports mitmproxy: the addon (`mitm.addon.Mirror`), its options, the
fan-out of copies, the primary-side policies, inspection, mirror flows, replay pacing, live config,
file watching and the loop guard."""
