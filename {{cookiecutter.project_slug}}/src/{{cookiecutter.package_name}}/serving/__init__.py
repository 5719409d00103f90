"""HTTP serving: the predictor (no web code), the FastAPI app, request models, metrics, uvicorn."""
