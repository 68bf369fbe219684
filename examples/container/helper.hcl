# spiffe-helper as a container entrypoint wrapping nginx (README.md next to this file).
# The Dockerfile's sed line fills in the AGENT, WORK and PORT placeholders.

agent_address = "@AGENT@"
cert_dir = "@WORK@/certs"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"

cmd = "nginx"
cmd_args = "-e stderr -p @WORK@ -c @WORK@/nginx.conf"
renew_signal = "SIGHUP"
# The container lives as long as nginx: when nginx exits, the helper (PID 1) exits with
# nginx's status (128+N when a signal N killed it), and the container stops.
on_cmd_exit = "exit"
