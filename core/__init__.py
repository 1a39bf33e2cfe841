"""The bottom layer: errors, box ops, safe YAML and checkpoint IO, the generic registry, config schema
checks, torch.distributed helpers and drawing. It imports nothing of ours."""
