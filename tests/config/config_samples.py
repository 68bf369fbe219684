"""Sample configuration text shared by the config tests (X.509 output keys, the Go-style file)."""

from __future__ import annotations

from pathlib import Path

X509 = 'svid_file_name = "s.pem"\nsvid_key_file_name = "k.pem"\nsvid_bundle_file_name = "b.pem"\n'


def go_conf(cert_dir: Path) -> str:
    """A helper.conf as Go users write it: octal modes, a health_checks block, jwt_svids list."""
    return f"""\
# Go spiffe-helper configuration
agent_address = "/tmp/spire-agent/public/api.sock"
cmd = "/usr/bin/mysql"
// MySQL reload query
cmd_args = "-e \\"ALTER INSTANCE RELOAD TLS;\\""
cert_dir = "{cert_dir}"
renew_signal = "SIGUSR1"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
cert_file_mode = 0644
key_file_mode = 0600
jwt_bundle_file_mode = 0640
jwt_svid_file_mode = 0400
jwt_bundle_file_name = "jwt_bundle.json"
jwt_svids = [
  {{
    jwt_svid_file_name = "jwt_svid.token"
    jwt_audience = "your-audience"
    jwt_extra_audiences = ["your-extra-audience-1", "your-extra-audience-2"]
  }},
  {{
    jwt_audience = "other"
    jwt_svid_file_name = "other.token"
  }}
]
add_intermediates_to_bundle = true
include_federated_domains = true
omit_expired = true
hint = "internal"
/* a multi-line
   comment */
health_checks {{
  listener_enabled = true
  bind_port = 8082
  liveness_path = "/healthz"
}}
"""
