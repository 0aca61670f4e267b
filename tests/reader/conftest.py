from tests.storage.backends import (  # noqa: F401
    aws_env,
    azure_env,
    azurite_server,
    backend,
    moto_endpoint,
    store,
)
