from chutes.chute import Chute

chute = Chute(username="test", name="oops"
