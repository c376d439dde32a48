"""The seeds' way to serve a language model, as a benchmark anchor (not used by Kubemaas):
``transformers`` ``generate()`` inside a FastAPI handler, one request at a time.

    python -m bench.naive_textgen_server CHECKPOINT_DIR PORT
"""

from __future__ import annotations

import sys
import threading
import time

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class Body(BaseModel):
    prompt_ids: list[int]
    max_tokens: int


def create_app(checkpoint: str) -> FastAPI:
    from transformers import LlamaForCausalLM

    torch.set_num_threads(1)
    model = LlamaForCausalLM.from_pretrained(checkpoint)
    model.eval()  # type: ignore[no-untyped-call]
    lock = threading.Lock()
    app = FastAPI()

    @app.post("/generate")
    def generate(body: Body) -> dict[str, float | int]:
        with lock, torch.no_grad():
            start = time.perf_counter()
            out = model.generate(torch.tensor([body.prompt_ids]), max_new_tokens=body.max_tokens,
                                 min_new_tokens=body.max_tokens, do_sample=False, pad_token_id=0)
            return {"tokens": int(out.shape[1] - len(body.prompt_ids)), "seconds": time.perf_counter() - start}

    @app.get("/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


if __name__ == "__main__":
    uvicorn.run(create_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
