"""The service registry: ServiceEntry, Kubernetes Service, WorkloadEntry and DestinationRule ->
clusters and endpoints, as istiod resolves them (`mesh.registry.build_registry`)."""
