"""The parts of scripts/bench.py, one concern each.

common: names every part shares; backends: the HTTP/1.1 backend process (`bench.py _serve`) and
reading its counters; grpc_backends: the gRPC backend process (`bench.py _serve_grpc`); loadgen:
the built-in load client (`bench.py _load`) and wrk's figures; grpcload: the gRPC load (h2load's
closed loop, the grpcio fixed-rate client `bench.py _grpc_load`); envoy_proxy: Envoy on
`meshmirror envoy`'s export; procs: the run's child processes and the noise meter; tools:
finding (and, on request, installing) wrk, nginx and h2load, the machine's description; points:
what is measured and the proxies' configs; measure: one point in one round, and the soak;
routing: scripts/bench_routing.py; figures: aggregation over rounds; targets: the checks;
render: the Markdown tables and the SVG.

scripts/bench.py puts the repository root on sys.path before importing these (they use
tests/support for processes, ports and /proc readings).
"""
