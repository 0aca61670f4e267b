from tests.storage.backends import aws_env, backend, moto_endpoint, store  # noqa: F401
