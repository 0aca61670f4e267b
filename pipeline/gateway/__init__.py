"""The HTTP gateway and web console (``telerad serve``): FastAPI over the pipeline.

    from pipeline.gateway import create_app
    app = create_app(settings, enqueue=start_batch)   # uvicorn.run(app, ...)
"""

from pipeline.gateway.app import create_app

__all__ = ["create_app"]
