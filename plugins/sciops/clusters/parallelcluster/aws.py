"""AWS credentials of an Airflow AWS connection: as environment variables (for ``pcluster``) or an EC2 client.

They are handed to the ``pcluster`` subprocess in its environment, never on its command line.
"""
from __future__ import annotations

# Imports inside functions here are deliberate: the backend registry (sciops.clusters) imports this module
# while run.config builds the DAG's form at parse time, and run.config imports the registry: a top-level import
# of the run's modules would be an import-time circle, and would load them into every DAG parse
# (tests/dags/test_dagbag.py).


def aws_env(conn_id: str | None) -> dict[str, str]:
    """Credentials (and an S3-compatible endpoint, for tests) of an Airflow AWS connection, as env vars."""
    from sciops.storage.credentials import connection_credentials

    creds, region, endpoint = connection_credentials(conn_id or "aws_default")
    env = {"AWS_ACCESS_KEY_ID": creds.access_key, "AWS_SECRET_ACCESS_KEY": creds.secret_key}
    if creds.token:
        env["AWS_SESSION_TOKEN"] = creds.token
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


def ec2_client(conn_id: str | None, region: str):
    """A boto3 EC2 client with the credentials (and endpoint, for tests) of an Airflow AWS connection."""
    import boto3

    from sciops.storage.credentials import connection_credentials

    creds, _, endpoint = connection_credentials(conn_id or "aws_default")
    return boto3.client("ec2", region_name=region, endpoint_url=endpoint, aws_access_key_id=creds.access_key,
                        aws_secret_access_key=creds.secret_key, aws_session_token=creds.token)
