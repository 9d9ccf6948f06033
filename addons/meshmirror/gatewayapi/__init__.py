"""Gateway API -> Istio: HTTPRoutes become VirtualServices as istiod converts them
(`gatewayapi.convert.convert_gateway_api`), so the route compiler sees one kind of route."""
