chute = Chute(
    username="mycompany",
    name="text-generator",
    concurrency=8  # Handle up to 8 concurrent requests
)
