"""Apps that serve the same task routes as ours, for comparison: FastAPI + SQLModel, and bare ASGI + asyncpg."""
