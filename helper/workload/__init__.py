"""The Workload API: where the agent is, the client, retry delays."""
