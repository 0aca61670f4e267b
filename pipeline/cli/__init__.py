"""The `telerad` command: thin command modules over the library.

Each module in this package that defines ``register(app)`` adds its commands;
``main.py`` discovers them, so a command group is one self-contained file.
Commands that talk to the queue import ``workers`` lazily, inside the command,
so that ``pipeline`` itself never imports Celery.
"""
