"""Validated snapshots into files: the formats, the pipelines, the atomic writer."""
