# spiffe-helper as a container entrypoint wrapping nginx (README.md next to this file).
# The Dockerfile's sed line fills in the AGENT, WORK and PORT placeholders.

agent_address = "@AGENT@"
cert_dir = "@WORK@/certs"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"

# No cmd here: the Dockerfile's ENTRYPOINT ends in "--" and its CMD is the command
# (nginx), which the helper starts after the first write and supervises.
renew_signal = "SIGHUP"
# The container lives as long as nginx: when nginx exits, the helper (PID 1) exits with
# nginx's status (128+N when a signal N killed it), and the container stops.
on_cmd_exit = "exit"
