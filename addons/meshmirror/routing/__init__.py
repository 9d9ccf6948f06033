"""Routes: compiling VirtualServices into a frozen `RouteTable` shaped like Envoy's route
configuration (`routing.compile`), and the pure per-request side: the request view, matching
(`routing.match`), sampling (`routing.sampling`) and explain. The per-request modules load no
config model."""
