chute = Chute(
    username="myuser",
    name="cost-optimized",
    min_replicas=0  # No idle costs
)
