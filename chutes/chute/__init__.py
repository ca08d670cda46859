"""``from chutes.chute import Chute, NodeSelector``."""

from chutes_core.chute import Chute, ChuteConfig, ChutePack
from chutes_core.cord import Cord, Job
from chutes_core.node_selector import NodeSelector

__all__ = ["Chute", "ChuteConfig", "ChutePack", "Cord", "Job", "NodeSelector"]
