chute = {"name": "not really"}
