"""What a route does besides choosing a destination, compiled once into frozen policies: path and
authority rewrites, header operations, redirect and direct response, fault injection, timeout and
retries. Pure; the mitm glue acts on them per request."""
