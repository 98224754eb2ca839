"""The composition root: `echo-node serve` starts the SCP, the loops and (embedded) a worker process. Nothing imports it."""
