"""Generated Workload API modules: run tools/gen_proto.py, do not edit."""
