"""Istio's per-resource validation rules and messages: `validate.resources.validate_resources`.

A port of istiod's webhook checks (`pkg/config/validation`: `ValidateVirtualService`,
`validateHTTPRoute`, `validateDestination`, `ValidateDestinationRule`, `ValidateServiceEntry`,
`ValidateWorkloadEntry`, `ValidateGateway`, `agent.ValidateWildcardDomain`, ...), and the Gateway
API's CRD rules, so a config that `kubectl apply` would reject is rejected here with the same
words, and every message names the YAML path in CRD spelling and the offending value. Everything
is collected in one pass; nothing here raises for any input the loader produced.

Rules that need more than one resource (hosts without endpoints, undefined subsets, ports) are
the routing stage's analysis. The only cross-resource rule here is "the same object defined twice
in one config set", because it is about the files, not about the mesh.

Where Istio's Go code stops at the first error of a function (validateHTTPRedirect,
validateGatewayNames) this package reports every error, because the user should fix all at once.

Modules, each importing only those above it:
  names         hosts, DNS labels, wildcard domains, ports, labels
  headers       header names and values
  checker       `Checker`: collects one resource's diagnostics; rules shared by every kind
  matches       StringMatch, RE2 regexes, HTTPMatchRequest
  destinations  route destinations, mirrors, percentages
  httproute     one `http` rule and the policies it carries
  unreachable   unreachable / ineffective HTTP rules (IST0130 / IST0131)
  virtualservice, destinationrule, serviceentry, istio_gateway, kubernetes, gateway_api
                one resource kind each
  resources     `validate_resources`: dispatch, and duplicate definitions
"""
