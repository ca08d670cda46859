"""The same work served by BentoML."""

import bentoml


@bentoml.service(workers=1)
class Echo:
    @bentoml.api
    def echo(self, text: str) -> dict:
        return {"text": text}
