from tests.storage.backends import (  # noqa: F401
    aws_env,
    azure_env,
    backend,
    store,
)
