"""Our SigV4 signing must match botocore's, byte for byte (moto checks signatures only with auth on)."""
from __future__ import annotations

import datetime as dt

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from sciops.s3 import Credentials, canonical_query, sign

WHEN = dt.datetime(2026, 11, 27, 1, 2, 3, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("token", [None, "session/+=token"])
@pytest.mark.parametrize("method,query", [("GET", {"list-type": "2", "prefix": "p/a b/é", "max-keys": "1000"}),
                                          ("PUT", {"partNumber": "2", "uploadId": "ab/c+d"}),
                                          ("POST", {"uploads": ""}), ("HEAD", {})])
def test_signature_matches_botocore(method, query, token):
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    path = "/bucket/dir%20x/%C3%A9t%C3%A9.tif"
    ours = sign(method, "127.0.0.1:5055", path, query, Credentials("AKIDEXAMPLE", secret, token), "eu-west-1",
                now=WHEN)
    # botocore, given the same signed headers, computes the signature the way S3 (and moto) check it
    headers = {k: v for k, v in ours.items() if k != "Authorization"}
    url = f"http://127.0.0.1:5055{path}" + (f"?{canonical_query(query)}" if query else "")
    req = AWSRequest(method=method, url=url, headers={**headers, "host": "127.0.0.1:5055"})
    req.context["timestamp"] = ours["x-amz-date"]
    auth = S3SigV4Auth(BotoCredentials("AKIDEXAMPLE", secret, token), "s3", "eu-west-1")
    theirs = auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req)
    assert ours["Authorization"].endswith(f"Signature={theirs}")


def test_credentials_never_shown():
    creds = Credentials("AKIAVISIBLE", "top-secret")
    assert "top-secret" not in repr(creds) and "AKIAVISIBLE" not in repr(creds)
