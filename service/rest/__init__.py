"""The REST front end (FastAPI): schemas, routes, error handling and request middleware.

Routes are thin: they turn JSON (or multipart) into engine calls and engine results into JSON.
Validation, limits and metrics live in ``service.engine``.
"""
