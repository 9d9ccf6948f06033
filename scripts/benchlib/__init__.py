"""The parts of scripts/bench.py, one concern each.

common: names every part shares; backends: the HTTP/1.1 backend process (`bench.py _serve`) and
reading its counters; loadgen: the built-in load client (`bench.py _load`) and wrk's figures;
procs: the run's child processes and the noise meter; tools: finding (and, on request,
installing) wrk and nginx, the machine's description; points: what is measured and the proxies'
configs; measure: one point in one round, and the soak; routing: scripts/bench_routing.py;
figures: aggregation over rounds; targets: the checks; render: the Markdown table and the SVG.

scripts/bench.py puts the repository root on sys.path before importing these (they use
tests/support for processes, ports and /proc readings).
"""
