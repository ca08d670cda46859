chute = Chute(
    username="mycompany",
    name="text-generator",
    image="python:3.11",
    revision="v1.2.0"
)
