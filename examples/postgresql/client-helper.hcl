# A client's SVID for psql (README.md next to this file): one-shot, the helper writes the
# files and exits. The README's sed line fills in the AGENT and WORK placeholders.

agent_address = "@AGENT@"
cert_dir = "@WORK@/client"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
daemon_mode = false
