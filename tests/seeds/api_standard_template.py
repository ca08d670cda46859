chute = Chute(
    username="mycompany",
    name="text-generator",
    image="python:3.11",
    standard_template="vllm"
)
