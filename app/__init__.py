"""The todo-backend Litestar application."""
