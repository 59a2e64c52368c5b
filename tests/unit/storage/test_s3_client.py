"""The S3 client is botocore's: how it addresses buckets, and what it never shows."""
from __future__ import annotations

from sciops.s3 import Credentials, S3Client


def test_credentials_never_shown():
    creds = Credentials("AKIAVISIBLE", "top-secret")
    assert "top-secret" not in repr(creds) and "AKIAVISIBLE" not in repr(creds)


def test_a_dotted_bucket_is_addressed_path_style_on_aws():
    """``lab.images`` as a virtual host (lab.images.s3.amazonaws.com) fails TLS: S3's wildcard certificate
    covers one label. botocore addresses such a bucket path-style, others as virtual hosts."""
    def url(bucket):
        client = S3Client(bucket, Credentials("AKIDEXAMPLE", "secret"), "eu-west-1").s3
        return client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "in/a.tif"})

    assert url("lab.images.v2").startswith("https://s3.eu-west-1.amazonaws.com/lab.images.v2/in/a.tif?")
    assert url("lab-images").startswith("https://lab-images.s3.")


def test_a_bucket_in_another_region_is_followed_there():
    """S3 answers a request sent to the wrong region with 301 PermanentRedirect and the bucket's region
    (``x-amz-bucket-region``); the client asks again there. No S3 is reachable from here and moto keeps no
    regions, so S3's two answers are given at botocore's ``before-send`` hook: what is tested is our
    client's handling of them, which is botocore's region redirector."""
    from botocore.awsrequest import AWSResponse

    sent = []

    class Raw:
        def __init__(self, body):
            self.body = body

        def stream(self, **_):
            yield self.body

    def answer(request, **_):
        sent.append(request.url)
        if len(sent) == 1:
            body = (b"<Error><Code>PermanentRedirect</Code><Message>use the eu-west-1 endpoint</Message>"
                    b"<Endpoint>lab-images.s3.eu-west-1.amazonaws.com</Endpoint></Error>")
            return AWSResponse(request.url, 301, {"x-amz-bucket-region": "eu-west-1"}, Raw(body))
        return AWSResponse(request.url, 200, {"ETag": '"abc"', "Content-Length": "3"}, Raw(b""))

    client = S3Client("lab-images", Credentials("AKIDEXAMPLE", "secret"), "us-east-1")
    client.s3.meta.events.register("before-send.s3", answer)
    assert client.head("in/a.tif").etag == "abc"
    assert len(sent) == 2 and "us-east-1" not in sent[1] and "eu-west-1" in sent[1], sent
