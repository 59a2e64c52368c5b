"""Where S3 credentials come from: an Airflow AWS connection, or the AWS SDK's own chain.

Two sources, one shape: ``resolve()`` gives ``(Credentials, region, endpoint_url)`` for
:class:`sciops.storage.s3.S3Client`, and the source names itself and its fixes in the one-line
errors :meth:`sciops.storage.root.S3Storage.check` raises.

- :class:`FromConnection`: an Airflow AWS connection (``aws_conn_id``): what Airflow's side
  always uses, and the ``sciops`` command when it is given ``--conn-id`` / ``SCIOPS_AWS_CONN_ID``.
- :class:`FromAwsChain`: boto3's own credential chain (``boto3.Session(profile_name=...)``:
  ``--profile`` or ``AWS_PROFILE``, the environment's keys, ``~/.aws/credentials`` and
  ``~/.aws/config``, SSO, a role to assume, the instance role), with the region and the
  ``endpoint_url`` the same files give: the ``sciops`` command on a laptop, as the AWS CLI would.
  Nothing here reads those files itself.

Keys are never logged nor put in a message.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

from sciops.errors import ConfigError

#: How long a renewing credential's keys are used before the provider is asked again.
RENEW_EVERY = dt.timedelta(minutes=5)
#: Hosts of AWS's own S3 endpoints: the default, which the object store finds from the region itself.
AWS_HOSTS = (".amazonaws.com", ".amazonaws.com.cn")


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = ""
    token: str | None = None
    #: botocore credentials that renew themselves (an assumed role, the instance profile): their
    #: keys expire within hours, and a long sync must not fail with ExpiredToken half-way.
    source: Any = field(default=None, compare=False)

    def __repr__(self) -> str:  # never show the secret, even in a traceback's locals
        return "Credentials(access_key=<hidden>, secret_key=<hidden>)"

    def current(self) -> "Credentials":
        """The keys to sign with now (``source`` refreshes them shortly before they expire)."""
        if self.source is None:
            return self
        frozen = self.source.get_frozen_credentials()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    def botocore(self):
        """These credentials as botocore's (the renewing ones as they are)."""
        if self.source is not None:
            return self.source
        from botocore.credentials import Credentials as BotoCredentials

        return BotoCredentials(self.access_key, self.secret_key, self.token)

    def provider(self) -> Callable[[], dict[str, Any]]:
        """obstore's credential provider: the current keys, asked for again after :data:`RENEW_EVERY`."""
        def current() -> dict[str, Any]:
            now = self.current()
            return {"access_key_id": now.access_key, "secret_access_key": now.secret_key, "token": now.token,
                    "expires_at": dt.datetime.now(dt.timezone.utc) + RENEW_EVERY}

        return current


@dataclass(frozen=True)
class FromConnection:
    """An Airflow AWS connection."""

    conn_id: str
    #: the run parameter / CLI setting that names this source, for errors
    field = "aws_conn_id"

    def __str__(self) -> str:
        return f"connection {self.conn_id!r}"

    def resolve(self):
        return connection_credentials(self.conn_id)

    def refused_fix(self) -> str:
        return "fix the connection's access key/secret"

    def cli_flags(self) -> str:
        return ""

    def endpoint_fix(self) -> str:
        return f"check the endpoint_url in the extras of connection {self.conn_id!r}"


@dataclass(frozen=True)
class FromAwsChain:
    """The AWS SDK's credential chain, as the AWS CLI finds it (``profile``: a named profile, else
    ``AWS_PROFILE`` or the default one)."""

    profile: str | None = None
    field = "profile"

    def cli_flags(self) -> str:
        """What the AWS CLI needs to act as this source."""
        return f" --profile {self.profile}" if self.profile else ""

    def __str__(self) -> str:
        if self.profile:
            return f"AWS profile {self.profile!r}"
        env = os.environ.get("AWS_PROFILE")
        return f"AWS profile {env!r} (AWS_PROFILE)" if env else "the default AWS profile"

    def resolve(self):
        return chain_credentials(self.profile, str(self))

    def refused_fix(self) -> str:
        flags = self.cli_flags()
        return f"renew them: `aws sso login{flags}` for SSO, or `aws configure{flags}` with a current access key"

    def endpoint_fix(self) -> str:
        return f"check endpoint_url in {config_files()[0]} (or AWS_ENDPOINT_URL_S3)"


def config_files() -> tuple[str, str]:
    """The AWS config and credentials files, where the SDK looks for them."""
    return (os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config",
            os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials")


def chain_credentials(profile: str | None, who: str):
    """(Credentials, region, endpoint_url) from boto3's credential chain; a ConfigError on ``profile`` that says
    what is missing and the command that makes it. The credentials renew themselves (SSO, assumed roles)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ProfileNotFound, SSOError, TokenRetrievalError

    flag = f" --profile {profile}" if profile else ""
    config, keys = config_files()
    try:
        session = boto3.Session(profile_name=profile)
    except ProfileNotFound:
        raise ConfigError([("profile", f"no AWS profile {profile!r} in {config} or {keys}: make it with `aws "
                                       f"configure{flag}` (an access key) or `aws configure sso{flag}`, or give "
                                       "another with --profile or AWS_PROFILE")]) from None
    try:
        found = session.get_credentials()
        frozen = found.get_frozen_credentials() if found is not None else None
        endpoint = session.client("s3").meta.endpoint_url   # the profile's endpoint_url, or AWS's own
    except (SSOError, TokenRetrievalError):
        raise ConfigError([("profile", f"the SSO login of {who} has expired or was never made: run `aws sso "
                                       f"login{flag}`")]) from None
    except BotoCoreError as exc:   # a partial key pair, a role it may not assume, a bad region or endpoint...
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        raise ConfigError([("profile", f"{who} cannot give AWS credentials ({type(exc).__name__}: {first}); fix "
                                       f"{config} / {keys}")]) from None
    if frozen is None or not frozen.access_key:
        raise ConfigError([("profile", f"no AWS credentials found for {who} (none in the environment, {keys}, {config} "
                                       f"or an instance role): run `aws configure{flag}` or `aws sso login{flag}`, "
                                       "or give a profile with --profile or AWS_PROFILE")])
    host = urllib.parse.urlsplit(endpoint).hostname or ""
    return (Credentials(frozen.access_key, frozen.secret_key, frozen.token, source=found),
            session.region_name or "us-east-1", None if host.endswith(AWS_HOSTS) else endpoint)


def connection_credentials(conn_id: str):
    """(Credentials, region, endpoint_url) of an Airflow AWS connection.

    A connection given as ``AIRFLOW_CONN_<ID>`` with a key pair is read directly (the CLI
    stays fast); anything else (a connection in the metadata DB or a secrets backend, a role
    to assume, the instance profile) goes through the Amazon provider's ``AwsBaseHook``, and
    the S3 client signs with ``Credentials.current()``, which renews expiring keys.
    """
    env = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if env:
        parsed = _parse_env_connection(env)
        if parsed and parsed["login"] and parsed["password"] and not parsed["extra"].get("role_arn"):
            extra = parsed["extra"]
            return (Credentials(parsed["login"], parsed["password"], extra.get("aws_session_token")),
                    extra.get("region_name") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                    extra.get("endpoint_url"))
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    try:
        hook = AwsBaseHook(aws_conn_id=conn_id, client_type="s3")
        session = hook.get_session()
        found = session.get_credentials()
    except Exception as exc:  # noqa: BLE001 - the provider raises many kinds; the message says which
        raise ConfigError([("aws_conn_id", f"connection {conn_id!r} cannot give AWS credentials "
                                           f"({type(exc).__name__}); check it in Admin > Connections")]) from None
    if found is None:
        raise ConfigError([("aws_conn_id", f"no AWS credentials: connection {conn_id!r} has none and there are none "
                                           "in the environment or instance profile; add a key pair to the "
                                           "connection (on a laptop: give the sciops command --profile instead)")])
    frozen = found.get_frozen_credentials()
    region = hook.conn_config.region_name or session.region_name or "us-east-1"
    return (Credentials(frozen.access_key, frozen.secret_key, frozen.token, source=found), region,
            hook.conn_config.endpoint_url)


def _parse_env_connection(value: str) -> dict[str, Any] | None:
    """The JSON or URI form of ``AIRFLOW_CONN_<ID>`` (as Airflow documents them)."""
    value = value.strip()
    if value.startswith("{"):
        try:
            data = json.loads(value)
        except ValueError:
            return None
        extra = data.get("extra") or {}
        if isinstance(extra, str):
            try:
                extra = json.loads(extra)
            except ValueError:
                extra = {}
        return {"login": data.get("login"), "password": data.get("password"), "extra": extra}
    u = urllib.parse.urlsplit(value)
    extra = dict(urllib.parse.parse_qsl(u.query))
    if "__extra__" in extra:
        try:
            extra = json.loads(extra["__extra__"])
        except ValueError:
            extra = {}
    return {"login": urllib.parse.unquote(u.username or "") or None,
            "password": urllib.parse.unquote(u.password or "") or None, "extra": extra}
