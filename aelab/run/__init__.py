"""The run lifecycle: the pre-run check, the job (build → fit → test → evaluate → record), the Hydra callback, the "
"summary."""
