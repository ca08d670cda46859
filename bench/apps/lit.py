"""The same work served by LitServe."""

import sys

import litserve as ls


class Echo(ls.LitAPI):
    def setup(self, device):
        pass

    def decode_request(self, request):
        return request["text"]

    def predict(self, text):
        return text

    def encode_response(self, text):
        return {"text": text}


if __name__ == "__main__":
    server = ls.LitServer(Echo(), accelerator="cpu", workers_per_device=1, api_path="/echo")
    server.run(
        port=int(sys.argv[1]), host="127.0.0.1", log_level="warning", generate_client_file=False
    )
