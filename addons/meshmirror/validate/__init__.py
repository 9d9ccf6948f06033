"""Istio's per-resource validation rules and messages, plus `istioctl analyze`-style warnings.

A port of istiod's webhook checks (`pkg/config/validation`: `ValidateVirtualService`,
`validateHTTPRoute`, `validateDestination`, `ValidateDestinationRule`, `ValidateServiceEntry`,
`ValidateWorkloadEntry`, `ValidateGateway`, `agent.ValidateWildcardDomain`, ...), so a config that
`kubectl apply` would reject is rejected here with the same words, and every message names the
YAML path in CRD spelling and the offending value. Everything is collected in one pass; nothing
here raises for any input the loader produced.

Rules that need more than one resource (hosts without endpoints, undefined subsets, ports) live in
analyze.py. The only cross-resource rule here is "the same object defined twice in one config set",
because it is about the files, not about the mesh.

Where Istio's Go code stops at the first error of a function (validateHTTPRedirect,
validateGatewayNames) this package reports every error, because the user should fix all at once.

Layout, each module importing only those above it:
  gocompat      Go's %q / %f / %v spellings and Atoi
  names         hosts, DNS labels, wildcard domains, IPs, ports, labels
  headers       header names and values
  protocols     port protocol names
  checker       `Checker`: collects one resource's diagnostics; rules shared by every kind
  matches       StringMatch, RE2 regexes, HTTPMatchRequest
  destinations  route destinations, mirrors, percentages
  httproute     one `http` rule and the policies it carries
  analysis      unreachable / ineffective HTTP rules (IST0130 / IST0131)
  virtualservice, destinationrule, serviceentry, gateway, kubernetes   one resource kind each
  resources     `validate_resources`: dispatch, and duplicate definitions
"""

from __future__ import annotations

from meshmirror.durations import parse_duration
from meshmirror.validate.analysis import IST_INEFFECTIVE_MATCH, IST_UNREACHABLE_RULE
from meshmirror.validate.matches import MAX_REGEX_LEN
from meshmirror.validate.names import (
    DNS1123_LABEL_MAX,
    UNIX_PREFIX,
    hosts_match,
    is_dns1123_label,
    validate_fqdn,
    validate_wildcard_domain,
)
from meshmirror.validate.resources import validate_resources
from meshmirror.validate.virtualservice import MESH_GATEWAY, NOT_YET_SERVED

__all__ = [
    "DNS1123_LABEL_MAX",
    "IST_INEFFECTIVE_MATCH",
    "IST_UNREACHABLE_RULE",
    "MAX_REGEX_LEN",
    "MESH_GATEWAY",
    "NOT_YET_SERVED",
    "UNIX_PREFIX",
    "hosts_match",
    "is_dns1123_label",
    "parse_duration",
    "validate_fqdn",
    "validate_resources",
    "validate_wildcard_domain",
]
