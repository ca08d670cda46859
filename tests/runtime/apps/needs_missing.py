import chutes_no_such_dependency  # noqa: F401

from chutes.chute import Chute

chute = Chute(username="test", name="needs-missing")
