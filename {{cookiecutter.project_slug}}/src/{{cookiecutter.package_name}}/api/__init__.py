"""HTTP serving: the FastAPI app (`app.py`), its request models and metrics, the uvicorn runner."""
