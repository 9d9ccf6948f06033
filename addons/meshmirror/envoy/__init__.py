"""The compiled route table and registry written as a static Envoy bootstrap (`meshmirror
envoy`): listeners and filters, the route configuration, the clusters. A consumer of `routing`
and `mesh` beside `mitm`; nothing on the request path imports it."""
