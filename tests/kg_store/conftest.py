"""The object-store fixture of the remote-store tests: a real S3 server (moto's server mode) on
127.0.0.1 per test module, dummy credentials, and a private remote cache."""
from __future__ import annotations

import logging
import os

import pytest

_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """(boto3 client, bucket, env): a moto S3 server on a free port of 127.0.0.1 for this module."""
    import boto3
    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {**_ENV, "AWS_ENDPOINT_URL": f"http://{host}:{port}",
                     "MMKG_REMOTE_CACHE": str(tmp_path_factory.mktemp("remote-cache"))}.items():
            mp.setenv(k, v)
        for k in _UNSET:
            mp.delenv(k, raising=False)
        client = boto3.client("s3")
        client.create_bucket(Bucket="mmkg-test")
        yield client, "mmkg-test", dict(os.environ)
    server.stop()
