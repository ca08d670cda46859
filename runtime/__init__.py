"""chutes_runtime: the host that serves a chute inside its container."""
