"""What an operator's monitoring reads: Prometheus metrics, liveness and readiness over HTTP."""
