# spiffe-helper for nginx (README.md next to this file).
#
# The helper writes the SVID where nginx.conf reads it, starts nginx once the files exist,
# and sends it SIGHUP after every rotation: the nginx master re-reads its configuration and
# certificates, new workers serve the new certificate, old workers finish the requests they
# are serving. The README's sed line fills in the AGENT (Workload API socket) and WORK
# (work directory) placeholders.

agent_address = "@AGENT@"
cert_dir = "@WORK@/certs"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
cert_file_mode = 0644
key_file_mode = 0600

# nginx stays in the foreground ("daemon off;" in nginx.conf) as the helper's child.
cmd = "nginx"
cmd_args = "-e stderr -p @WORK@ -c @WORK@/nginx.conf"
renew_signal = "SIGHUP"
# If nginx dies, the helper exits with nginx's status instead of running without it.
on_cmd_exit = "exit"
