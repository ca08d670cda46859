from chutes.image import Image

# Simple dependency installation
image = (
    Image(username="myuser", name="my-app", tag="1.0")
    .from_base("nvidia/cuda:12.4.1-runtime-ubuntu22.04")
    .run_command("pip install transformers torch")
)

chute = Chute(
    username="myuser",
    name="my-app",
    image=image
)
