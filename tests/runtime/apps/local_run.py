"""A chute served with chute.run_local(), as the seeds show."""

import os
from datetime import datetime, timezone

from chutes.chute import Chute

chute = Chute(username="test", name="local-run")


@chute.on_startup()
async def custom_health(self):
    async def health_check():
        healthy = not os.path.exists(os.environ["SICK_FILE"])
        return {
            "status": "healthy" if healthy else "unhealthy",
            "model_loaded": True,
            "timestamp": datetime.now(timezone.utc).isoformat(),
        }

    # Replace the default health check, as the seeds do.
    self.health_check = health_check


@chute.cord(method="GET")
async def hello(self) -> dict:
    return {"hello": "world", "health": await self.health_check()}


if __name__ == "__main__":
    chute.run_local(host="127.0.0.1", port=int(os.environ["PORT"]), reload=False, log_level="info")
